"""serve: the Custom Vision-compatible HTTP endpoint, driven by real HTTP clients.

Each server runs on 127.0.0.1 port 0 in a thread around a real ONNX bundle (tools/toy_models).
A red block at (128, 96)-(256, 192) in a 640x480 frame fills exactly one window of the
colour-blocks detector, so its box comes back as left/top/width/height 0.2.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.bundle import load_bundle, write_manifest
from edge_agent.cli.serve import serve
from edge_agent.predictor import Predictor
from edge_agent.serve import PredictionServer, make_server, predictions_json, route
from edge_agent.types import Detections
from tests.helpers.http import (
    MAX_BODY_BYTES,
    NO_PROXY,
    RED_BOX,
    RED_PNG,
    TIMEOUT_S,
    call,
    encode,
    multipart,
    red_block_frame,
    running,
)
from tools.toy_models import colour_blocks_bundle, mean_colour_classifier


def post_image(
    server: PredictionServer,
    data: bytes,
    path: str = "/image",
    content_type: str = "application/octet-stream",
) -> tuple[int, Any, Any]:
    return call(server, path, data, {"Content-Type": content_type})


def assert_error(status: int, body: Any, want_status: int, want_code: str) -> str:
    assert status == want_status, body
    assert set(body) == {"error"} and body["error"]["code"] == want_code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


def assert_red_block(body: Any) -> None:
    assert len(body["predictions"]) == 1, body
    pred = body["predictions"][0]
    assert (pred["tagId"], pred["tagName"]) == (0, "red")
    assert pred["probability"] == pytest.approx(1.0, abs=0.02)
    assert pred["boundingBox"] == pytest.approx(RED_BOX, abs=1e-3)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    predictor = Predictor(load_bundle(colour_blocks_bundle(tmp_path_factory.mktemp("det"))))
    yield predictor
    predictor.close()


@pytest.fixture(scope="module")
def server(detector: Predictor) -> Iterator[PredictionServer]:
    made = make_server(
        detector,
        "127.0.0.1",
        0,
        project="shelf",
        iteration="Iteration3",
        max_body_bytes=MAX_BODY_BYTES,
        url_fetch_timeout_s=2.0,
    )
    with running(made):
        yield made


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    path = tmp_path_factory.mktemp("cls")
    mean_colour_classifier(path / "m.onnx", size=32)
    write_manifest(
        path,
        {
            "schema": "edgesight.bundle/1",
            "name": "colour",
            "version": 2,
            "task": "classify",
            "labels": ["red", "green", "blue"],
            "model": {"file": "m.onnx", "format": "onnx"},
            "input": {"width": 32, "height": 32, "color": "RGB"},
            "decoder": {"type": "softmax"},
            "thresholds": {"score": 0.5},
            "files": {"m.onnx": ""},
        },
    )
    predictor = Predictor(load_bundle(path))
    yield predictor
    predictor.close()


# --- POST /image --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "content_type"),
    [
        (".png", "application/octet-stream"),
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpg", "application/x-www-form-urlencoded"),  # what curl --data-binary sends by default
    ],
)
def test_raw_image_gives_the_custom_vision_answer(server, ext, content_type):
    status, body, headers = post_image(
        server, encode(red_block_frame(), ext), content_type=content_type
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert set(body) == {"id", "project", "iteration", "created", "predictions"}
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert (body["project"], body["iteration"]) == ("shelf", "Iteration3")
    assert body["created"].endswith("Z")
    assert datetime.fromisoformat(body["created"].replace("Z", "+00:00")).utcoffset().seconds == 0
    assert_red_block(body)


@pytest.mark.parametrize(
    "fields",
    [
        [("imageData", "frame.png", RED_PNG)],  # the container's samples: curl -F imageData=@f
        [("note", None, b"hello"), ("imageData", None, RED_PNG)],  # a plain field, not a file
        [("note", None, b"hello"), ("file", "frame.png", RED_PNG)],  # any file part
    ],
)
def test_multipart_upload(server, fields):
    data, content_type = multipart(fields)
    status, body, _ = post_image(server, data, content_type=content_type)
    assert status == 200, body
    assert_red_block(body)


def test_multipart_without_an_image_part_is_400(server):
    data, content_type = multipart([("note", None, b"hello")])
    message = assert_error(
        *post_image(server, data, content_type=content_type)[:2], 400, "BadRequest"
    )
    assert "imageData" in message and "note" in message


@pytest.mark.parametrize(
    "path",
    [
        "/image",
        "/image/nostore",
        "/shelf/image",
        "/shelf/image/nostore",
        "/detect/iterations/Iteration3/image",
        "/classify/iterations/Iteration3/image",
        "/2b1d5e7a-0000-4000-8000-000000000000/detect/iterations/Iteration3/image/nostore",
        "/customvision/v3.0/Prediction/2b1d5e7a/detect/iterations/Iteration3/image",  # cloud shape
        "/customvision/v3.0/Prediction/2b1d5e7a/classify/iterations/Iteration3/image/nostore",
    ],
)
def test_container_and_sdk_paths(server, path):
    status, body, _ = post_image(server, RED_PNG, path=path + "?application=x")
    assert status == 200, body
    assert_red_block(body)


def test_route_table():
    assert route("/") == route("/health") == "health"
    assert route("/detect/iterations/it/url") == route("/p/url/nostore") == "url"
    assert route("/customvision/v3.1/prediction/p/detect/iterations/it/url") == "url"
    for path in ("/images", "/a/b/image", "/detect/iterations/image", "/health/x", "/url/x"):
        assert route(path) is None, path


def test_classifier_lists_every_class_best_first(classifier):
    img = np.full((48, 64, 3), (40, 60, 200), np.uint8)  # BGR: mostly red
    with running(make_server(classifier, "127.0.0.1", 0)) as srv:
        status, body, _ = post_image(srv, encode(img), "/classify/iterations/it/image")
    assert status == 200, body
    preds = body["predictions"]
    assert preds[0]["tagName"] == "red"
    assert sorted(p["tagId"] for p in preds) == [0, 1, 2]
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-6)
    assert all("boundingBox" not in p for p in preds)


def test_detections_come_back_best_first():
    det = Detections(
        xyxy=np.array([[0, 0, 10, 10], [10, 10, 20, 30]], np.float32),
        confidence=np.array([0.6, 0.9], np.float32),
        class_id=np.array([1, 0], np.int32),
    )
    preds = predictions_json(det, ["a", "b"], 100, 50)
    assert [p["tagName"] for p in preds] == ["a", "b"]
    assert preds[0]["boundingBox"] == pytest.approx(
        {"left": 0.1, "top": 0.2, "width": 0.1, "height": 0.4}
    )


# --- passesThreshold: an opt-in the Custom Vision container does not have -----------------

CUSTOM_VISION_KEYS = ["tagId", "tagName", "probability", "boundingBox"]


def raw_answer(server: PredictionServer, path: str) -> bytes:
    """The answer's bytes, with the per-request ``id`` and ``created`` blanked."""
    req = urllib.request.Request(
        server.url + path, RED_PNG, {"Content-Type": "application/octet-stream"}
    )
    with NO_PROXY.open(req, timeout=TIMEOUT_S) as resp:
        raw = resp.read()
    return re.sub(rb'"(id|created)": "[^"]*"', rb'"\1": ""', raw)


def test_without_the_opt_in_the_answer_is_byte_for_byte_the_containers(server):
    plain = raw_answer(server, "/image")
    assert raw_answer(server, "/image?thresholds=false") == plain
    assert raw_answer(server, "/image?application=x&thresholds=0") == plain
    assert b"passesThreshold" not in plain
    body = json.loads(plain)
    assert json.dumps(body).encode() == plain  # json.dumps' own separators and key order
    assert [list(p) for p in body["predictions"]] == [CUSTOM_VISION_KEYS]
    flagged = raw_answer(server, "/image?thresholds=true")
    assert flagged.replace(b', "passesThreshold": true', b"") == plain


@pytest.mark.parametrize("query", ["?thresholds=true", "?thresholds=1", "?thresholds",
                                   "?application=x&thresholds=TRUE"])  # fmt: skip
def test_thresholds_opt_in_says_which_boxes_pass(server, detector, query):
    path = "/customvision/v3.0/Prediction/p/detect/iterations/it/image" + query
    status, body, _ = post_image(server, RED_PNG, path=path)
    assert status == 200, body
    pred = body["predictions"][0]
    assert list(pred) == [*CUSTOM_VISION_KEYS, "passesThreshold"]
    # The decoder keeps only boxes over their class's threshold: each one passes.
    assert pred["passesThreshold"] is True
    assert pred["probability"] >= detector.thresholds[pred["tagId"]]


def test_thresholds_opt_in_on_a_classifier_passes_only_a_counted_top1(classifier):
    img = np.full((48, 64, 3), (40, 60, 200), np.uint8)  # BGR: mostly red
    with running(make_server(classifier, "127.0.0.1", 0)) as srv:
        status, body, _ = post_image(srv, encode(img), "/image?thresholds=1")
    assert status == 200, body
    preds = body["predictions"]
    assert preds[0]["tagName"] == "red" and preds[0]["probability"] > 0.5
    # thresholds.score 0.5: red is the top-1 and over it; the others are not counted.
    assert [p["passesThreshold"] for p in preds] == [True, False, False]


def test_a_bad_thresholds_value_is_400_naming_it(server):
    status, body, _ = post_image(server, RED_PNG, path="/image?thresholds=maybe")
    message = assert_error(status, body, 400, "BadRequest")
    assert "thresholds must be true or false" in message and "'maybe'" in message


# --- errors -------------------------------------------------------------------------------


def test_undecodable_image_is_400(server):
    status, body, _ = post_image(server, b'{"url": "http://x"}')
    assert "starts with" in assert_error(status, body, 400, "BadRequestImageFormat")
    assert_error(
        *post_image(server, RED_PNG[: len(RED_PNG) // 8])[:2], 400, "BadRequestImageFormat"
    )


def test_empty_body_is_400(server):
    assert_error(*post_image(server, b"")[:2], 400, "BadRequestImageSizeBytes")
    assert_error(*call(server, "/image", method="POST")[:2], 400, "BadRequestImageSizeBytes")


def test_oversize_body_is_413_and_the_server_keeps_serving(server):
    status, body, _ = post_image(server, b"\xff" * (MAX_BODY_BYTES + 1))
    assert str(MAX_BODY_BYTES) in assert_error(status, body, 413, "BadRequestImageSizeBytes")
    assert post_image(server, RED_PNG)[0] == 200


def test_oversize_body_is_refused_before_upload_with_expect_100(server):
    """A client that sends ``Expect: 100-continue`` gets the 413 without sending the body."""
    with socket.create_connection((server.server_name, server.server_port), TIMEOUT_S) as sock:
        sock.sendall(
            f"POST /image HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * MAX_BODY_BYTES}"
            "\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply
    assert json.loads(payload)["error"]["code"] == "BadRequestImageSizeBytes"


@pytest.fixture(scope="module")
def strict_server(detector: Predictor) -> Iterator[PredictionServer]:
    """A server that gives a request 1.5 s to arrive, and a read 5 s."""
    made = make_server(detector, "127.0.0.1", 0, request_timeout_s=1.5, socket_timeout_s=5.0)
    with running(made):
        yield made


def trickle(server: PredictionServer, head: bytes, slow: bytes) -> bytes:
    """Send ``head``, then ``slow`` a byte a second (slowloris) until the server answers or
    hangs up; what it sent back."""
    with socket.create_connection((server.server_name, server.server_port), TIMEOUT_S) as sock:
        sock.sendall(head)
        sock.settimeout(1.0)
        for byte in slow:
            try:
                sock.sendall(bytes([byte]))
                reply = sock.recv(65536)  # waits a second: the server's chance to hang up
            except TimeoutError:
                continue
            except ConnectionError:
                return b""
            sock.settimeout(TIMEOUT_S)
            while chunk := sock.recv(65536):
                reply += chunk
            return reply
    raise AssertionError("the server waited for the whole slow request")


POST_RED = f"POST /image HTTP/1.1\r\nHost: x\r\nContent-Length: {len(RED_PNG)}\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("head", "slow", "answer"),
    [(b"", POST_RED, b""), (POST_RED, RED_PNG, b"HTTP/1.1 408 ")],
    ids=["headers", "body"],
)
def test_a_slow_client_is_cut_off_and_others_are_served(strict_server, head, slow, answer):
    """One byte a second: each read is quick, the request never ends. The deadline (1.5 s
    here) cuts it off: slow headers get the connection closed, a slow body a 408. Meanwhile
    others get their answers."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.monotonic()
        slowloris = pool.submit(trickle, strict_server, head, slow)
        assert post_image(strict_server, RED_PNG)[0] == 200  # while the slow one trickles
        reply = slowloris.result(timeout=10)
    assert time.monotonic() - start < 5
    assert reply.startswith(answer), reply
    if answer:
        body = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "RequestTimeout" and "1.5 s" in body["error"]["message"]


def test_a_keep_alive_connection_gets_a_deadline_per_request(strict_server):
    """The deadline counts from a request's first byte, not from the connection's."""
    conn = http.client.HTTPConnection(strict_server.server_name, strict_server.server_port, 5)
    try:
        for _ in range(3):
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() and resp.getheader("Connection") != "close"
            time.sleep(1.0)  # idle between requests: 2 s in all, more than the 1.5 s deadline
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/predict", "/images", "/health/x", "/a/b/c/image"])
def test_unknown_path_is_404(server, path):
    assert_error(*call(server, path, b"x")[:2], 404, "NotFound")
    assert_error(*call(server, path)[:2], 404, "NotFound")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/image", "POST"),
        ("PUT", "/url", "POST"),
        ("DELETE", "/image", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(server, method, path, allow):
    status, body, headers = call(server, path, b"{}" if method != "GET" else None, method=method)
    assert_error(status, body, 405, "MethodNotAllowed")
    assert headers["Allow"] == allow


def test_internal_error_is_500_json_and_the_server_keeps_serving(
    server, detector, monkeypatch, caplog
):
    def broken(image):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(detector, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="edge_agent.serve"):
        status, body, _ = post_image(server, RED_PNG)
    assert "model exploded" in assert_error(status, body, 500, "ErrorPrediction")
    assert any(r.exc_info for r in caplog.records), "the traceback is logged"
    monkeypatch.undo()
    assert post_image(server, RED_PNG)[0] == 200


def test_keep_alive_connection_survives_errors(server):
    conn = http.client.HTTPConnection(server.server_name, server.server_port, timeout=TIMEOUT_S)
    try:
        for path, body, want in [
            ("/nope", b"x" * 1000, 404),
            ("/image", b"junk", 400),
            ("/image", RED_PNG, 200),
            ("/health", None, 200),
        ]:
            conn.request("POST" if body else "GET", path, body)
            resp = conn.getresponse()
            assert resp.status == want and json.loads(resp.read())
            assert resp.getheader("Connection") != "close"
    finally:
        conn.close()


def test_malformed_request_line_gets_a_json_400(server):
    with socket.create_connection((server.server_name, server.server_port), TIMEOUT_S) as sock:
        sock.sendall(b"GET /image now HTTP/1.1\r\n\r\n")
        reply = sock.makefile("rb").read()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), reply
    assert "error" in json.loads(payload)


# --- health, concurrency, logging, lifecycle ----------------------------------------------


@pytest.mark.parametrize("path", ["/", "/health"])
def test_health_describes_the_model(server, path):
    status, body, _ = call(server, path)
    assert status == 200
    assert body["status"] == "ok"
    assert (body["model"]["name"], body["model"]["version"]) == ("colour-blocks", 1)
    assert len(body["model"]["sha256"]) == 64
    assert (body["task"], body["labels"]) == ("detect", ["red", "green", "blue"])
    assert (body["project"], body["iteration"]) == ("shelf", "Iteration3")


def test_concurrent_requests_all_succeed(server):
    frames = [RED_PNG, encode(red_block_frame(), ".jpg")] * 8
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda data: post_image(server, data), frames))
    assert [status for status, _, _ in answers] == [200] * len(frames)
    for _, body, _ in answers:
        assert_red_block(body)
    assert len({body["id"] for _, body, _ in answers}) == len(frames)


def test_one_info_line_per_request_and_nothing_on_stderr(server, caplog, capsys):
    paths = ("/logged/image", "/logged/nope")  # unique, so late lines of other tests don't count

    def logged() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "edge_agent.serve" and r.getMessage().split()[1] in paths
        ]

    with caplog.at_level(logging.INFO, logger="edge_agent.serve"):
        post_image(server, RED_PNG, path=paths[0] + "?x=1")
        call(server, paths[1])
        deadline = time.monotonic() + TIMEOUT_S
        while len(logged()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the server logs after it has answered, so it may lag the client
    lines = sorted(logged())  # in the order the server finished, not the order sent
    assert len(lines) == 2, lines
    assert lines[0].startswith("GET /logged/nope 404 ")
    assert lines[1].startswith("POST /logged/image 200 ") and lines[1].endswith(" ms")
    assert capsys.readouterr().err == ""


def test_serve_refuses_a_bad_bundle(tmp_path, capsys):
    assert serve(tmp_path / "missing", "127.0.0.1", 0) == 2
    assert "no such folder or file" in capsys.readouterr().err


def test_serve_refuses_a_port_in_use(tmp_path, capsys):
    bundle = colour_blocks_bundle(tmp_path / "b")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert serve(bundle, "127.0.0.1", taken.getsockname()[1]) == 2
    assert "cannot serve on 127.0.0.1:" in capsys.readouterr().err


def test_serve_runs_until_sigterm(tmp_path):
    bundle = colour_blocks_bundle(tmp_path / "b")
    script = (
        "import logging, sys; from pathlib import Path; from edge_agent.cli.serve import serve;"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
        "sys.exit(serve(Path(sys.argv[1]), '127.0.0.1', 0))"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(bundle)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        while not (
            found := re.search(r"serving colour-blocks@1 .* on http://127\.0\.0\.1:(\d+)", seen)
        ) and (line := proc.stdout.readline()):
            seen += line  # the runtime logs its provider choice first
        assert found, seen
        conn = http.client.HTTPConnection("127.0.0.1", int(found[1]), timeout=TIMEOUT_S)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        proc.terminate()
        assert proc.wait(TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
