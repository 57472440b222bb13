"""HTTP helpers for the serve tests: a running server in a thread, calls that bypass proxies,
the red-block image whose box the toy detector finds exactly, and images whose header declares
a huge size (built without allocating the image)."""

from __future__ import annotations

import json
import struct
import threading
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.bundle import load_bundle
from edge_agent.predictor import Predictor
from edge_agent.serve import PredictionServer
from tools.toy_models import colour_blocks_bundle

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


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of zeros, made in milliseconds at any size: 30000x30000 is 0.9 MB.

    The rows are all zeros, so one deflate segment of 100 rows, ended by a full flush (byte
    aligned, no back-references across it), repeats; an empty final block and the Adler-32 of
    the zeros (a = 1, b = length mod 65521) close the stream. Decoding it would take GBs."""
    rows = 100 if height % 100 == 0 else 1
    zeros = b"\0" * ((width + 1) * rows)  # a filter byte (0) and the pixels of each row
    deflate = zlib.compressobj(9)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    segment = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = ((width + 1) * height % 65521) << 16 | 1
    idat = first + segment * (height // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + (png_chunk(b"IEND", b""))
    )


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
def toy_detector(folder: Path) -> Iterator[Predictor]:
    """The colour-blocks detector (tools/toy_models), which finds the red block exactly."""
    predictor = Predictor(load_bundle(colour_blocks_bundle(folder)))
    try:
        yield predictor
    finally:
        predictor.close()


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


def post_json(server: PredictionServer, path: str, payload: Any) -> tuple[int, Any, Any]:
    return call(server, path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


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
