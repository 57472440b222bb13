"""Fuzz: thousands of generated configs, manifests and HTTP requests. Whatever arrives, the
agent answers with its own refusal (ConfigError / BundleError naming a field, HTTP 4xx with a
JSON message) or accepts it; never a traceback, and the server still answers afterwards."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.bundle import BundleError, load_bundle, parse_manifest
from edge_agent.cli import main
from edge_agent.config import AgentConfig, ConfigError, parse_config
from edge_agent.predictor import Predictor
from edge_agent.serve import PredictionServer, make_server
from tests.helpers.http import RED_PNG, running
from tools.toy_models import colour_blocks_bundle

CONFIG_FILE = Path("/etc/edgesight/agent.yaml")
EXAMPLES = 1000  # per fuzzed parser: a few seconds each
HTTP_EXAMPLES = 300

GOOD_CONFIG: dict[str, Any] = {
    "device_id": "cam-1",
    "model": {"bundle": "bundle", "threads": 1, "onnx": {"graph_optimization": "basic"}},
    "sources": [
        {"id": "aisle3", "uri": "clip.mp4", "fps_limit": 5, "stages": [{"type": "counts"}]}
    ],
    "mqtt": {"host": "broker.local", "port": 8883, "keepalive_s": 30},
    "health": {"degraded_clear_s": 30},
}

# Values a careless or hostile file holds: wrong types, out of range, odd strings, nesting.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    # No subnormals: the trainer tests flush denormals to zero for the whole process (torch).
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.text(max_size=20),
    st.sampled_from(["", "..", "/", "rtsp://", "TODO", "\x00", "#", "a/b", "1e999", "0x10"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a nested dict/list, so a mutation can land anywhere."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, good: dict[str, Any]) -> dict[str, Any]:
    """``good`` with one to three places replaced by, or given, a generated value."""
    data = json.loads(json.dumps(good))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = draw(values)
        else:
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return data


def _config_text(data: dict[str, Any]) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:  # pragma: no cover - safe_dump takes every generated value
        return "{}"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(GOOD_CONFIG))
def test_fuzzed_configs_are_accepted_or_refused_by_field(data: dict[str, Any]) -> None:
    try:
        cfg = parse_config(_config_text(data), CONFIG_FILE)
    except ConfigError as exc:
        assert exc.issues, "a refusal names at least one problem"
        for issue in exc.issues:
            assert issue.message and (issue.path or issue.line), issue  # where to look
        return
    assert isinstance(cfg, AgentConfig)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | mutated(GOOD_CONFIG).map(lambda d: _config_text(d).encode())
)
def test_check_config_on_any_file_exits_2_never_a_traceback(raw: bytes) -> None:
    """Through the command itself: the bundle these configs name does not exist, so every
    file, valid or not, UTF-8 or not, must end in exit 2 with a message, never an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "agent.yaml")
        path.write_bytes(raw)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["check-config", str(path)])
    assert code == 2 and str(path) in err.getvalue()


@pytest.fixture(scope="module")
def good_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bundle = colour_blocks_bundle(tmp_path_factory.mktemp("fuzz-bundle"))
    return json.loads((bundle / "manifest.json").read_text())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_manifests_are_accepted_or_refused_by_field(
    data: st.DataObject, good_manifest: dict[str, Any]
) -> None:
    manifest = data.draw(mutated(good_manifest))
    raw = json.dumps(manifest, allow_nan=True).encode()
    try:
        parse_manifest(raw, Path("bundle"))
    except BundleError as exc:
        assert str(exc).startswith("bundle bundle: manifest.json: "), exc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PredictionServer]:
    bundle = load_bundle(colour_blocks_bundle(tmp_path_factory.mktemp("fuzz-serve")))
    predictor = Predictor(bundle, threads=1)
    made = make_server(predictor, "127.0.0.1", 0, max_body_bytes=64 * 1024)
    with running(made):
        yield made
    predictor.close()


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
PATHS = st.one_of(
    st.sampled_from(["/image", "/url", "/health", "/", "/image/nostore", "//image", "/image?x=1"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz/.%?&=-_0123456789", max_size=40).map(
        lambda p: "/" + p
    ),
)
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "Prediction-Key", "X-Thing", "Accept", "Expect"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz/-;= 0123456789", max_size=40),
    max_size=3,
)
BODIES = st.one_of(
    st.binary(max_size=512),
    st.just(RED_PNG[:100]),
    st.just(RED_PNG),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.text(max_size=6), scalars)),
)


@settings(max_examples=HTTP_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=METHODS, path=PATHS, headers=HEADERS, body=BODIES)
def test_fuzzed_requests_get_an_answer_never_a_500(
    server: PredictionServer, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request(method, path, body=body if method not in ("GET", "HEAD") else None,
                     headers=headers)  # fmt: skip
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (resp.status, raw[:200])
    if resp.status >= 400 and method != "HEAD":
        error = json.loads(raw)["error"]
        assert error["code"] and error["message"]
    # ... and the server still answers afterwards
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
