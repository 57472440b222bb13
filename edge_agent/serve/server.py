"""A local HTTP prediction endpoint shaped like the Azure Custom Vision edge container, so
clients written for an exported Custom Vision model keep working.

The routes are those of the container's Flask app (``app.py`` in Custom Vision's "Dockerfile"
export): ``POST /image`` (raw bytes, or multipart with the file in ``imageData``) and
``POST /url`` (JSON ``{"url": ...}``), optionally under ``/<project>``, optionally as
``/classify|detect/iterations/<name>/...``, optionally with a ``/nostore`` suffix; the cloud
prediction API's ``/customvision/v3.0/Prediction/<project>/...`` prefix works too.
``GET /`` and ``GET /health`` describe the model. docs/serve.md is the user-facing contract;
``edge-agent serve`` (edge_agent/cli/serve.py) loads a bundle and runs this server.

Only the standard library's http.server: no web framework on the device.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import socketserver
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edge_agent import __version__
from edge_agent.predictor import Prediction, Predictor
from edge_agent.serve.addresses import UrlAllowList
from edge_agent.serve.connection import DeadlineReader, refuse_busy
from edge_agent.serve.errors import GENERIC_CODES, RequestError, error_body
from edge_agent.serve.fetch import READ_CHUNK_BYTES, fetch_image
from edge_agent.serve.images import decode_image
from edge_agent.serve.request import (
    created_now,
    multipart_image,
    predictions_json,
    route,
    thresholds_requested,
    url_from_json,
)
from edge_agent.serve.settings import ServeSettings
from edge_agent.sources import redact

__all__ = ["PredictionServer", "ServeSettings", "make_server"]

log = logging.getLogger("edge_agent.serve")  # the name docs/serve.md shows

#: A refused body up to this size is read and dropped before the error is sent: closing a
#: socket with unread data sends a TCP reset, and the client would see that, not our 413.
DISCARD_MAX_BYTES = 64 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: PredictionServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client posting frames reuses its connection
    server_version = f"edgesight/{__version__}"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client waits out its
    # delayed ACK (40 ms on Linux) for every answer.
    disable_nagle_algorithm = True
    _t0: float | None = None
    _unread: int | None = 0  # body bytes not read yet; None = unknown (must close)

    def setup(self) -> None:
        settings = self.server.settings
        super().setup()
        self.connection.settimeout(settings.socket_timeout_s)
        self._reader = DeadlineReader(
            self.connection, settings.socket_timeout_s, settings.request_timeout_s
        )
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.end_request()  # waiting for the next request is idle time, not its deadline
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class writes every request and error to stderr."""

    def log_error(self, format: str, *args: Any) -> None:
        """The base class calls this (only) when a request line or headers time out."""
        log.info("%s: %s; connection closed", self.client_address[0], format % args)

    def parse_request(self) -> bool:
        self._t0 = time.perf_counter()
        self._unread = 0
        ok = super().parse_request()
        if ok:
            self._unread = self._declared_length()
        return ok

    def _declared_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (raw is not None and not raw.isdigit()):
            return None
        return int(raw or 0)

    def handle_expect_100(self) -> bool:
        """Refuse an oversize body before the client sends it (curl waits for the 100)."""
        length = self._declared_length() or 0  # parse_request sets _unread after this call
        if length > self.server.settings.max_body_bytes:
            self._unread, self.close_connection = 0, True  # the client will not send it
            self._send_error(self._too_big(length))
            return False
        return super().handle_expect_100()

    def _too_big(self, length: int) -> RequestError:
        cap = self.server.settings.max_body_bytes
        return RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "BadRequestImageSizeBytes",
            f"the request body is {length} bytes, more than the {cap} this server accepts",
        )

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, url.query
        kind = route(path)
        try:
            if kind is None:
                raise RequestError(HTTPStatus.NOT_FOUND, "NotFound", f"no such path: {path}")
            allow = "GET, HEAD" if kind == "health" else "POST"
            if self.command not in allow.split(", "):
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    f"{self.command} {path}: allowed methods are {allow}",
                    allow=allow,
                )
            payload = self._health() if kind == "health" else self._predict(kind, query)
        except RequestError as exc:
            self._send_error(exc)
        except Exception:
            log.exception("%s %s failed", self.command, path)
            self._send_error(
                RequestError(
                    HTTPStatus.INTERNAL_SERVER_ERROR, "ErrorUnknown", "internal error; see the log"
                )
            )
        else:
            self._send_json(HTTPStatus.OK, payload)

    def _health(self) -> dict[str, Any]:
        bundle, settings = self.server.predictor.bundle, self.server.settings
        return {
            "status": "ok",
            "model": bundle.describe(),
            "task": bundle.manifest.task,
            "labels": list(bundle.manifest.labels),
            "project": settings.project,
            "iteration": settings.iteration,
            "agent_version": __version__,
        }

    def _read_body(self, expected: str) -> bytes:
        length = self._unread
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                raise RequestError(
                    HTTPStatus.LENGTH_REQUIRED,
                    "BadRequest",
                    "send the body with a Content-Length (Transfer-Encoding is not supported)",
                )
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f"Content-Length must be a number, but got {self.headers['Content-Length']!r}",
            )
        if length > self.server.settings.max_body_bytes:
            raise self._too_big(length)
        if length == 0:
            code = "BadRequestImageSizeBytes" if expected == "image" else "BadRequest"
            raise RequestError(
                HTTPStatus.BAD_REQUEST, code, f"the request body is empty; expected {expected}"
            )
        try:
            body = self.rfile.read(length)
        except TimeoutError as exc:  # a slow client: the deadline or the socket timeout
            self._unread, self.close_connection = None, True
            raise RequestError(
                HTTPStatus.REQUEST_TIMEOUT, "RequestTimeout", f"the request body is late: {exc}"
            ) from exc
        except OSError as exc:  # reset mid-upload
            body = b""
            log.debug("reading %d-byte body failed: %s", length, exc)
        self._unread = 0
        self._reader.end_request()
        if len(body) < length:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f"the request body ended after {len(body)} of {length} bytes",
            )
        return body

    @staticmethod
    def _run_model(predictor: Predictor, image: np.ndarray) -> Prediction:
        try:
            return predictor.predict(image)
        except Exception as exc:
            log.exception("prediction failed on a %dx%d image", image.shape[1], image.shape[0])
            raise RequestError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "ErrorPrediction",
                f"the model failed on this image: {type(exc).__name__}: {exc}",
            ) from exc

    def _predict(self, kind: str, query: str) -> dict[str, Any]:
        settings, predictor = self.server.settings, self.server.predictor
        flags = thresholds_requested(query)  # a bad value is refused before the body is read
        if kind == "url":
            if not settings.allow_url:
                raise RequestError(
                    HTTPStatus.FORBIDDEN,
                    "Forbidden",
                    "POST /url is off on this server (start it with --allow-url to turn it on)",
                )
            url = url_from_json(self._read_body('JSON {"url": "https://..."}'))
            data = fetch_image(
                url, settings.max_body_bytes, settings.url_fetch_timeout_s, settings.url_allow
            )
            source = redact(url)[:300]
        else:
            body = self._read_body("image")
            content_type = self.headers.get("Content-Type", "")
            is_multipart = content_type.lower().startswith("multipart/")
            data = multipart_image(content_type, body) if is_multipart else body
            source = ""
        # Decoding and inference hold the memory: a bounded number at once, the rest wait.
        if not self.server.decode_slots.acquire(timeout=settings.request_timeout_s):
            raise RequestError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                f"busy: {settings.max_decodes} image(s) are being decoded and run; retry later",
            )
        try:
            image = decode_image(data, settings.max_pixels, source)
            del data
            result = self._run_model(predictor, image)
        finally:
            self.server.decode_slots.release()
        height, width = image.shape[:2]
        return {
            "id": str(uuid.uuid4()),
            "project": settings.project,
            "iteration": settings.iteration,
            "created": created_now(),
            "predictions": predictions_json(
                result.predictions,
                predictor.labels,
                width,
                height,
                predictor.thresholds if flags else None,
            ),
        }

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class answers malformed requests with HTML; answer JSON like the rest."""
        status = HTTPStatus(code)
        self.close_connection = True
        generic = GENERIC_CODES.get(code, "BadRequest" if code < 500 else "ErrorUnknown")
        self._send_error(RequestError(status, generic, message or status.phrase))

    def _send_error(self, exc: RequestError) -> None:
        headers = {"Allow": exc.allow} if exc.allow else {}
        self._send_json(exc.status, error_body(exc.code, exc.message), headers)

    def _send_json(
        self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        if self._unread is None or (self._unread or 0) > DISCARD_MAX_BYTES:
            self.close_connection = True
        elif self._unread:
            self._discard(self._unread)
        self._reader.end_request()  # the answer gets the whole socket timeout to go out
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as exc:  # the client went away
            self.close_connection = True
            log.debug("could not send the response: %s", exc)
        ms = 0.0 if self._t0 is None else (time.perf_counter() - self._t0) * 1000
        path = urlsplit(self.path).path if getattr(self, "path", "") else "-"
        log.info("%s %s %d %.1f ms", self.command or "-", path, status, ms)
        self._t0 = None

    def _discard(self, length: int) -> None:
        try:
            while length > 0 and (chunk := self.rfile.read(min(length, READ_CHUNK_BYTES))):
                length -= len(chunk)
        except OSError:
            pass
        self._unread = 0
        self.close_connection = self.close_connection or length > 0


class PredictionServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the predictor and settings its handlers use."""

    daemon_threads = True  # an idle keep-alive connection must not block shutdown

    def __init__(self, address: tuple[str, int], predictor: Predictor, settings: ServeSettings):
        self.predictor = predictor
        self.settings = settings
        self.decode_slots = threading.BoundedSemaphore(settings.max_decodes)
        self._connection_slots = threading.BoundedSemaphore(settings.max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """HTTPServer.server_bind resolves the host's FQDN, which hangs without DNS."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host = f"[{self.server_name}]" if ":" in self.server_name else self.server_name
        return f"http://{host}:{self.server_port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most ``max_connections``: one more is answered 503 at
        once and closed rather than given a thread and a body buffer of its own."""
        if not self._connection_slots.acquire(blocking=False):
            refuse_busy(request, self.settings.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: its slot is not coming back
            self._connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up is routine; anything else is logged with its traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("connection from %s dropped", client_address)
        else:
            log.exception("error serving %s", client_address)


def make_server(
    predictor: Predictor, host: str = "127.0.0.1", port: int = 8080, **settings: Any
) -> PredictionServer:
    """A bound, not yet serving, server; run ``serve_forever()`` (in a thread) to serve.
    ``settings`` are ServeSettings fields; ``url_allow`` may also be its text form
    (``"10.0.0.0/8,camera.local"``)."""
    if isinstance(settings.get("url_allow"), str):
        settings["url_allow"] = UrlAllowList.parse(settings["url_allow"])
    return PredictionServer((host, port), predictor, ServeSettings(**settings))
