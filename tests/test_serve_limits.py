"""serve holds a bounded number of connections and decodes: one connection too many is answered
503 at once, a decode that cannot get a turn within the request deadline is answered 503, and
the server answers normally once the load is gone."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from edge_agent.bundle import load_bundle
from edge_agent.predictor import Predictor
from edge_agent.serve import PredictionServer, make_server
from tests.helpers.http import RED_PNG, call, running
from tools.toy_models import colour_blocks_bundle


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    made = Predictor(load_bundle(colour_blocks_bundle(tmp_path_factory.mktemp("limits"))))
    yield made
    made.close()


def raw_answer(server: PredictionServer) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_one_connection_too_many_is_answered_503_at_once(predictor):
    server = make_server(predictor, "127.0.0.1", 0, max_connections=1)
    with running(server):
        host, port = server.server_address[:2]
        idle = socket.create_connection((str(host), int(port)), timeout=5)  # holds the only slot
        try:
            deadline = time.monotonic() + 5  # until the server has accepted it and taken the slot
            while server._connection_slots._value and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.monotonic()
            status, body = raw_answer(server)
            assert status == 503 and body["error"]["code"] == "ServiceUnavailable"
            assert "1 connections are open" in body["error"]["message"]
            assert time.monotonic() - t0 < 2  # answered at once, not after the idle one
        finally:
            idle.close()
        # the slot comes back when the idle connection goes
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if raw_answer(server)[0] == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server never answered again after the idle connection closed")


def test_a_decode_without_a_turn_is_answered_503_within_the_deadline(predictor, monkeypatch):
    real_predict = predictor.predict
    inside, release = threading.Event(), threading.Event()

    def held_predict(image):
        inside.set()  # the first request holds the only decode turn from here...
        release.wait(10)  # ... until the test lets it go
        return real_predict(image)

    monkeypatch.setattr(predictor, "predict", held_predict)
    server = make_server(predictor, "127.0.0.1", 0, max_decodes=1, request_timeout_s=0.5)
    with running(server):
        first: list[int] = []
        holder = threading.Thread(
            target=lambda: first.append(call(server, "/image", RED_PNG)[0]), daemon=True
        )
        holder.start()
        assert inside.wait(10), "the first request never reached the model"
        status, body, _ = call(server, "/image", RED_PNG)
        assert status == 503 and body["error"]["code"] == "ServiceUnavailable", body
        assert "1 image(s) are being decoded" in body["error"]["message"]
        release.set()
        holder.join(10)
        assert first == [200]
        monkeypatch.setattr(predictor, "predict", real_predict)
        assert call(server, "/image", RED_PNG)[0] == 200  # the turn came back


def test_limits_must_be_positive(predictor):
    for name in ("max_connections", "max_decodes"):
        with pytest.raises(ValueError, match=f"{name} must be > 0"):
            make_server(predictor, "127.0.0.1", 0, **{name: 0})
