"""Config input that cannot hurt: every hostile or mistaken file is a located config error
(check-config exit 2), never a traceback, a hang, or a value the user did not write."""

from __future__ import annotations

import os
import socket
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from edge_agent.cli import main
from edge_agent.config import (
    AgentConfig,
    ConfigError,
    check_files,
    load_config,
    parse_config,
    read_config,
)
from edge_agent.config import sources as config_sources
from edge_agent.config.loader import MAX_CONFIG_BYTES
from edge_agent.config.yamltree import MAX_DEPTH, MAX_VALUES
from tools.toy_models import colour_blocks_bundle

FILE = Path("/etc/edgesight/agent.yaml")
BASE: dict[str, Any] = {
    "device_id": "shelf-cam-1",
    "model": {"bundle": "bundle", "threads": 1},
    "sources": [{"id": "aisle3", "uri": "clip.mp4"}],
    "mqtt": {"host": "broker.local"},
}


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, FILE)
    return [str(i) for i in info.value.issues]


def config_with(path: tuple[Any, ...], value: Any) -> str:
    """BASE as YAML with the value at ``path`` set (sections created as needed)."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    holder = data
    for key in path[:-1]:
        holder = holder.setdefault(key, {}) if isinstance(key, str) else holder[key]
    holder[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


# --- YAML that could hang, crash or blow up -------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("a: &x [*x]\n", 1, "recursive alias: *x"),
        ("model: &m\n  bundle: b\n  again: *m\n", 3, "recursive alias: *m"),
        (BILLION_LAUGHS, None, f"aliases expand to more than {MAX_VALUES} values"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", 1, f"nested more than {MAX_DEPTH} levels"),
        ("a: [" + ",".join(["1"] * (MAX_VALUES + 1)) + "]\n", 1, f"more than {MAX_VALUES}"),
        ("mqtt:\n  host: !!python/object:os.system ls\n", 2, "cannot read this !!python"),
        ("mqtt:\n  port: !!int abc\n", 2, "mqtt.port: cannot read this !!int"),
        ("model:\n  bundle: a\x00b\n", 2, "control character U+0000"),
        ("? [a, b]\n: 1\n", 1, "a key must be a name"),
        ("a: 1\n---\nb: 2\n", 2, "invalid YAML"),
    ],
)
def test_hostile_yaml_is_a_located_error(text, line, expected):
    issue = issues_of(text)[0]  # a bad key is skipped: the sections it left out are missing
    assert expected in issue
    if line is not None:
        assert issue.startswith(f"line {line}: ")


def test_an_alias_bomb_is_refused_within_a_second():
    start = time.perf_counter()
    issues_of(BILLION_LAUGHS)
    assert time.perf_counter() - start < 1.0  # 10^9 values: minutes and gigabytes if expanded


def test_non_utf8_bytes_name_their_line(tmp_path):
    file = tmp_path / "agent.yaml"
    file.write_bytes(b"device_id: cam\nmodel:\n  bundle: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    (issue,) = info.value.issues
    assert issue.line == 3 and "not UTF-8" in issue.message and "0xe9" in issue.message


def test_a_file_too_large_to_be_a_config_is_not_read_whole(tmp_path):
    file = tmp_path / "agent.yaml"
    file.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(file)


@pytest.mark.parametrize(
    "content",
    [b"a: &x [*x]\n", BILLION_LAUGHS.encode(), b"model:\n  bundle: \xff\xfe\n", b"a: 1\na: 2\n"],
)
def test_check_config_reports_hostile_files_with_exit_2(tmp_path, capsys, content):
    (tmp_path / "agent.yaml").write_bytes(content)
    code = main(["check-config", str(tmp_path / "agent.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "problem(s)" in err and "Traceback" not in err


# --- duplicate keys and merges ----------------------------------------------------------------


def test_duplicate_keys_name_both_lines():
    text = "model:\n  bundle: a\nsources:\n  - id: s\n    uri: 0\n    uri: 1\nmodel:\n  bundle: b\n"
    assert issues_of(text) == [
        "line 6: sources[0].uri: duplicate key: first at line 5, again at line 6",
        "line 7: model: duplicate key: first at line 1, again at line 7",
    ]


MERGED = """\
model:
  bundle: bundle
sources:
  - &cam
    id: door
    uri: rtsp://cam.local/1
    fps_limit: 5
    reconnect_max_delay_s: 10
  - <<: *cam
    id: yard
    uri: rtsp://cam.local/2
  - <<: [*cam, {fps_limit: 2, kind: stream}]
    id: gate
"""


def test_merge_keys_share_settings_and_explicit_keys_win():
    cfg = parse_config(MERGED, FILE)
    by_id = {s.id: s for s in cfg.sources}
    assert by_id["yard"].uri == "rtsp://cam.local/2" and by_id["yard"].fps_limit == 5
    assert by_id["gate"].uri == "rtsp://cam.local/1"
    assert by_id["gate"].fps_limit == 5 and by_id["gate"].kind == "stream"  # the first map wins


def test_a_bad_merged_value_is_reported_where_it_is_written():
    found = issues_of(MERGED.replace("fps_limit: 5", "fps_limit: fast"))
    assert any(i.startswith("line 7: sources[1].fps_limit") for i in found)
    assert issues_of("model:\n  <<: 5\n  bundle: b\nsources: [{id: s, uri: 0}]\n") == [
        "line 2: model: << merges a map or a list of maps (e.g. <<: *defaults)"
    ]


# --- numbers: the type the field wants, finite, in range ---------------------------------------

#: Every numeric field of the agent config (test_every_numeric_field_is_covered keeps it whole).
NUMERIC = {
    ("model", "threads"): 2,
    ("model", "score_threshold"): 0.5,
    ("sources", 0, "fps_limit"): 5,
    ("sources", 0, "capture_timeout_s"): 5,
    ("sources", 0, "reconnect_initial_delay_s"): 1,
    ("sources", 0, "reconnect_fast_for_s"): 30,
    ("sources", 0, "reconnect_max_delay_s"): 60,
    ("updates", "max_bundle_bytes"): 50_000_000,
    ("updates", "read_gap_s"): 30,
    ("updates", "deadline_s"): 1800,
    ("updates", "trial_timeout_s"): 60,
    ("updates", "trial_memory_mb"): 1024,
    ("updates", "probation_s"): 300,
    ("updates", "keep_models"): 3,
    ("mqtt", "port"): 8883,
    ("mqtt", "keepalive_s"): 30,
    ("mqtt", "reconnect_min_delay_s"): 1,
    ("mqtt", "reconnect_max_delay_s"): 120,
    ("mqtt", "max_queued_messages"): 100,
    ("mqtt", "session_expiry_s"): 3600,
    ("mqtt", "heartbeat_s"): 30,
    ("mqtt", "stats_interval_s"): 60,
    ("mqtt", "commands", "max_bytes"): 4096,
    ("mqtt", "outbox", "max_bytes"): 1_048_576,
    ("mqtt", "outbox", "max_age_s"): 3600,
    ("mqtt", "outbox", "commit_interval_s"): 1,
    ("health", "degraded_clear_s"): 30,
    ("health", "thermal", "limit_c"): 85,
    ("health", "thermal", "resume_c"): 75,
    ("health", "thermal", "step"): 0.5,
    ("health", "thermal", "min_factor"): 0.25,
    ("health", "thermal", "check_every_s"): 10,
    ("sources", 0, "motion", "sensitivity"): 25,
    ("sources", 0, "motion", "min_area"): 0.01,
    ("sources", 0, "motion", "keepalive_s"): 30,
    ("sources", 0, "motion", "hold_s"): 2,
    ("sources", 0, "motion", "adapt_s"): 5,
    ("sources", 0, "motion", "lighting_area"): 0.5,
    ("sources", 0, "motion", "width"): 160,
}


def _numeric_fields(model: type[BaseModel], prefix: tuple[Any, ...]) -> set[tuple[Any, ...]]:
    found = set()
    for name, field in model.model_fields.items():
        here = (*prefix, name)
        args = typing.get_args(field.annotation) or (field.annotation,)
        inner = [a for a in args if isinstance(a, type)]
        for arg in inner:
            if issubclass(arg, BaseModel):
                found |= _numeric_fields(arg, (*here, 0) if name == "sources" else here)
        if any(arg in (int, float) for arg in inner) and name != "uri":
            found.add(here)
    return found


def test_every_numeric_field_is_covered_and_bounded_both_ways():
    assert _numeric_fields(AgentConfig, ()) == set(NUMERIC)
    for path in NUMERIC:
        model: Any = AgentConfig
        for key in path[:-1]:
            if isinstance(key, str):
                annotation = model.model_fields[key].annotation
                args = typing.get_args(annotation) or (annotation,)
                model = next(a for a in args if isinstance(a, type) and issubclass(a, BaseModel))
                if typing.get_origin(annotation) is list:
                    model = args[0]
        bounds = {type(m).__name__ for m in model.model_fields[path[-1]].metadata}
        assert bounds & {"Gt", "Ge"} and bounds & {"Lt", "Le"}, f"{path} is not bounded"


@pytest.mark.parametrize("path", list(NUMERIC), ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("value", [True, "5", float("nan"), float("inf"), 10**30, -1])
def test_numbers_are_numbers_finite_and_in_range(path, value):
    found = issues_of(config_with(path, value))
    where = ".".join(str(p) for p in path).replace(".0.", "[0].")
    assert len(found) == 1 and where in found[0], found


def test_integers_are_not_truncated_from_floats():
    assert "model.threads" in issues_of(config_with(("model", "threads"), 2.0))[0]
    assert parse_config(config_with(("sources", 0, "fps_limit"), 5), FILE).sources[0].fps_limit == 5


# --- uris and ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("rtsp://", "rtsp:// URL has no host"),
        ("http:///stream", "http:// URL has no host"),
        ("rtsp://:554/x", "rtsp:// URL has no host"),
        ("RTSP://user:secret@/x", "RTSP:// URL has no host"),
        ("rtsp://cam:99999/x", "Port out of range"),
        ("rtsp://cam:0/x", "port 0"),
        ("", "must not be empty"),
        (True, "expected a camera index"),
        (-1, "a camera index is 0 or more"),
    ],
)
def test_uris_that_cannot_be_opened_are_refused_with_the_reason(uri, reason):
    (issue,) = issues_of(config_with(("sources", 0, "uri"), uri))
    assert issue.startswith("line ") and "sources[0].uri" in issue and reason in issue
    assert "secret" not in issue


@pytest.mark.parametrize("uri", [0, 2, "1", "/dev/video0", "/dev/v4l/by-id/usb-cam", "rtsp://c/x"])
def test_cameras_and_stream_urls_stay_valid(uri):
    assert parse_config(config_with(("sources", 0, "uri"), uri), FILE).sources[0].uri == uri


def test_uri_forms_are_the_ones_the_sources_module_reads():
    """check-config and the sources read a uri's kind by the same rule (one copy of it)."""
    pytest.importorskip("cv2")
    from edge_agent.sources import resolve_kind

    for uri, kind in (
        (0, "camera"),
        ("2", "camera"),
        ("/dev/video0", "camera"),
        ("/dev/v4l/by-id/usb-cam", "camera"),
        ("RTSP://cam.local/s", "stream"),
        ("https://cam.local/mjpeg", "stream"),
        ("/srv/clip.mp4", "file"),
    ):
        assert resolve_kind(config_sources.SourceConfig(id="s", uri=uri)) == kind, uri
        assert config_sources.is_camera(uri) == (kind == "camera"), uri
        assert config_sources.is_stream(uri) == (kind == "stream"), uri


@pytest.mark.parametrize(
    ("device_id", "bad"),
    [("shelf cam", "' '"), ("a/b", "'/'"), ("a+", "'+'"), ("#", "'#'"), ("kamera-ü", "'ü'")],
)
def test_device_ids_that_are_not_one_topic_level_are_refused_not_rewritten(device_id, bad):
    (issue,) = issues_of(config_with(("device_id",), device_id))
    assert issue.startswith("line 1: device_id: character " + bad)


def test_source_ids_name_the_character_at_fault():
    (issue,) = issues_of(config_with(("sources", 0, "id"), "aisle.3"))
    assert "sources[0].id: character '.' at position 6" in issue


def test_the_default_device_id_the_host_name_is_checked(monkeypatch):
    text = config_with(("device_id",), "x").replace("device_id: x\n", "")
    monkeypatch.setattr(socket, "gethostname", lambda: "pi4.lab.example")
    assert parse_config(text, FILE).device_id == "pi4.lab.example"
    monkeypatch.setattr(socket, "gethostname", lambda: "my pc")
    (issue,) = issues_of(text)
    assert "device_id: character ' '" in issue and "the host name" in issue


def test_mqtt_host_is_a_name_not_a_url():
    (issue,) = issues_of(config_with(("mqtt", "host"), "mqtts://broker.local"))
    assert "line 6: mqtt.host: expected a host name or address, not a URL" in issue
    assert "must not be empty" in issues_of(config_with(("mqtt", "host"), " "))[0]


# --- files the config names ------------------------------------------------------------------


def _lines_of(text: str) -> dict[str, int]:
    return {line.strip(): n for n, line in enumerate(text.splitlines(), 1)}


def test_check_files_reports_each_missing_file_at_its_line(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "video.mp4").write_bytes(b"")
    data = {
        "model": {"bundle": "nothere"},
        "sources": [
            {"id": "a", "uri": "missing.mp4"},
            {"id": "b", "uri": "video.mp4", "kind": "folder"},
            {"id": "c", "uri": "folder", "kind": "file"},
            {"id": "d", "uri": "video.mp4"},
            {"id": "e", "uri": 0},
            {"id": "f", "uri": "rtsp://cam.local/1"},
        ],
        "mqtt": {"tls": {"ca_file": "ca.crt", "cert_file": "c.pem", "key_file": "video.mp4"}},
    }
    text = yaml.safe_dump(data, sort_keys=False)
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    at = _lines_of(text)
    found = [(i.line, i.path, i.message) for i in check_files(read_config(config))]
    assert found == [
        (at["bundle: nothere"], "model.bundle", f"{tmp_path / 'nothere'} does not exist"),
        (at["uri: missing.mp4"], "sources[0].uri", f"{tmp_path / 'missing.mp4'} does not exist"),
        (
            at["- id: b"] + 1,
            "sources[1].uri",
            f"expected a folder, but {tmp_path / 'video.mp4'} is a file",
        ),
        (
            at["uri: folder"],
            "sources[2].uri",
            f"expected a file, but {tmp_path / 'folder'} is a folder",
        ),
        (at["ca_file: ca.crt"], "mqtt.tls.ca_file", f"{tmp_path / 'ca.crt'} does not exist"),
        (at["cert_file: c.pem"], "mqtt.tls.cert_file", f"{tmp_path / 'c.pem'} does not exist"),
    ]


def test_check_files_refuses_what_cannot_be_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it to read would block: refused, not opened
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(b"")
    locked.chmod(0)
    config = tmp_path / "agent.yaml"
    config.write_text(
        "model: {bundle: .}\nsources:\n  - {id: a, uri: pipe.mp4}\n  - {id: b, uri: locked.mp4}\n"
    )
    found = [str(i) for i in check_files(read_config(config))]
    assert found[0].startswith("line 3: sources[0].uri: ") and "not a regular file" in found[0]
    if os.geteuid() != 0:  # root reads anything
        assert found[1].startswith("line 4: sources[1].uri: ") and "Permission denied" in found[1]


def test_check_config_reports_missing_files_with_their_lines(tmp_path, capsys):
    colour_blocks_bundle(tmp_path / "bundle")
    text = config_with(("mqtt", "tls"), {"ca_file": "ca.crt"})
    (tmp_path / "agent.yaml").write_text(text)
    assert main(["check-config", str(tmp_path / "agent.yaml")]) == 2
    err = capsys.readouterr().err
    at = _lines_of(text)
    assert f"line {at['uri: clip.mp4']}: sources[0].uri: {tmp_path / 'clip.mp4'} does not" in err
    assert f"line {at['ca_file: ca.crt']}: mqtt.tls.ca_file: " in err
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "ca.crt").write_bytes(b"")
    assert main(["check-config", str(tmp_path / "agent.yaml")]) == 0
