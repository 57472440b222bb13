"""A loopback HTTP(S) server for the bundle downloader's tests: it serves one blob, correctly or
with one of the faults a device meets on the way (a cut, a trickle, a lie about the length, a
server ignoring Range, a flipped byte, a 404), and counts the requests and Range headers seen.

HTTP/1.0 (one request per connection, the body ends when the server closes), so a cut is a
close and the downloader must notice the missing bytes itself.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.tls import KeyPair

MODES = (
    "ok",  # 200, or 206 to a Range
    "trickle",  # one byte every trickle_s
    "lie",  # Content-Length off by lie_by (the whole blob is still sent)
    "ignore_range",  # always 200 with the whole blob
    "substitute",  # one byte flipped (at flip_at)
    "not_found",  # 404
    "no_length",  # no Content-Length: the body ends when the connection closes
    "wrong_range",  # a 206 to any Range, but from byte 0 (Content-Range says so)
)
PATH = "/bundle.tar.gz"
RANGE = re.compile(r"^bytes=(\d+)-$")
POLL_S = 0.05  # serve_forever's shutdown poll


class UpdateServer:
    """``with UpdateServer(blob, mode=...) as srv: fetch(srv.url, ...)``.

    ``cut_at=N`` makes the first request (only) send N body bytes and close, whatever the mode.
    ``redirect_to=URL`` makes the first request (only) answer 302 to URL.
    ``tls`` (a tests/helpers/tls.py KeyPair) serves https for 127.0.0.1.
    """

    def __init__(
        self,
        blob: bytes,
        *,
        mode: str = "ok",
        cut_at: int | None = None,
        trickle_s: float = 1.0,
        lie_by: int = 1000,
        flip_at: int | None = None,
        redirect_to: str | None = None,
        tls: KeyPair | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.blob = blob
        self.mode = mode
        self.cut_at = cut_at
        self.trickle_s = trickle_s
        self.lie_by = lie_by
        self.flip_at = len(blob) // 2 if flip_at is None else flip_at
        self.redirect_to = redirect_to
        self.tls = tls
        self.requests = 0
        self.ranges: list[str | None] = []  # the Range header of every request, None if absent
        self.closing = threading.Event()  # ends trickles when the test is done
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{PATH}"

    def start(self) -> UpdateServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        httpd.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(POLL_S,), name="update-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> UpdateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, range_header: str | None) -> int:
        """Record a request; return its number (1 for the first)."""
        with self._lock:
            self.requests += 1
            self.ranges.append(range_header)
            return self.requests


def _handler(server: UpdateServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests assert on counts, not on logs

        def do_GET(self) -> None:
            number = server.count(self.headers.get("Range"))
            if self.path != PATH or server.mode == "not_found":
                self.send_error(404)
                return
            if server.redirect_to is not None and number == 1:
                self.send_response(302)
                self.send_header("Location", server.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            blob = server.blob
            if server.mode == "substitute":
                flipped = bytearray(blob)
                flipped[server.flip_at] ^= 0xFF
                blob = bytes(flipped)
            start = 0
            match = RANGE.match(self.headers.get("Range") or "")
            if match and server.mode != "ignore_range":
                start = 0 if server.mode == "wrong_range" else int(match[1])
                if start >= len(blob):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
            else:
                self.send_response(200)
            body = blob[start:]
            length = len(body) + (server.lie_by if server.mode == "lie" else 0)
            if server.mode != "no_length":
                self.send_header("Content-Length", str(length))
            self.end_headers()
            if server.cut_at is not None and number == 1:
                body = body[: server.cut_at]
            if server.mode == "trickle":
                self._trickle(body)
            else:
                self.wfile.write(body)

        def _trickle(self, body: bytes) -> None:
            for i in range(len(body)):
                if server.closing.wait(server.trickle_s if i else 0):
                    return
                try:
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up: what the test wants

    return Handler


@contextmanager
def serving(blob: bytes, **kwargs: Any) -> Iterator[UpdateServer]:
    """``UpdateServer(blob, **kwargs)``, started and closed around the block."""
    with UpdateServer(blob, **kwargs) as server:
        yield server
