"""HTTP helpers for the serve tests: a running server in a thread, calls that bypass proxies,
and the red-block image whose box the toy detector finds exactly."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from edge_agent.serve import PredictionServer

RED_BOX = {"left": 0.2, "top": 0.2, "width": 0.2, "height": 0.2}
MAX_BODY_BYTES = 256 * 1024  # the test servers' cap: the test images are far below it
TIMEOUT_S = 5
POLL_S = 0.05  # serve_forever's shutdown poll: the default 0.5 s would dominate the run time


def red_block_frame() -> np.ndarray:
    img = np.full((480, 640, 3), 60, np.uint8)
    img[96:192, 128:256] = (0, 0, 255)  # BGR red: window (32, 32)-(64, 64) at 160 px
    return img


def encode(img: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    assert ok
    return buf.tobytes()


RED_PNG = encode(red_block_frame())


def multipart(fields: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """(name, filename or None, data) parts -> (body, Content-Type)."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@contextmanager
def running(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    thread = threading.Thread(
        target=server.serve_forever, args=(POLL_S,), name="test-http", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT_S)


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(
    server: PredictionServer,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, Any, Any]:
    """(status, decoded JSON body or None, headers), for success and error answers alike."""
    req = urllib.request.Request(server.url + path, body, headers or {}, method=method)
    try:
        with NO_PROXY.open(req, timeout=TIMEOUT_S) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, exc.headers
    return status, json.loads(raw) if raw else None, hdrs
