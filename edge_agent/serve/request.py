"""Request parsing and answers for ``edge-agent serve``: routes, image bodies (raw and
multipart), /url downloads restricted to http(s), and the Custom Vision answer shape."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from http import HTTPStatus
from http.client import HTTPException, HTTPMessage
from typing import IO, Any
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge_agent import __version__
from edge_agent.publish.payloads import CUSTOM_VISION_SHAPE, custom_vision_predictions
from edge_agent.sources import redact
from edge_agent.types import Classifications, Detections

#: Largest request body, bytes. The Custom Vision container takes 4 MiB; 20 MiB fits a
#: full-resolution phone JPEG or PNG. Applies to images fetched by /url too.
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
#: /url: socket timeout for connect and each read, and the deadline for the whole download, s.
DEFAULT_URL_FETCH_TIMEOUT_S = 10.0
#: A stalled upload or an idle keep-alive connection gives its thread back after this long, s.
CLIENT_TIMEOUT_S = 30.0
#: A refused body up to this size is read and dropped before the error is sent: closing a
#: socket with unread data sends a TCP reset, and the client would see that, not our 413.
DISCARD_MAX_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
#: The multipart field the container reads first (its README: curl -F imageData=@file.jpg).
IMAGE_FIELD = "imageData"
URL_SCHEMES = ("http", "https")
#: Where a response has no more specific code (malformed request line, 414, 431, 501, ...).
GENERIC_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 500: "ErrorUnknown"}

_PREDICT_PATH = re.compile(
    r"(?:(?i:/customvision/v\d+\.\d+/prediction)?/[^/]+)?"  # /<project>, maybe the cloud's
    r"(?:/(?:classify|detect)/iterations/[^/]+)?"
    r"/(?P<kind>image|url)(?:/nostore)?/?"
)
_HEALTH_PATHS = frozenset({"/", "/health"})


class RequestError(Exception):
    """A request the server refuses: HTTP status, Custom Vision-style error code, message."""

    def __init__(self, status: HTTPStatus, code: str, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.allow = status, code, message, allow


def route(path: str) -> str | None:
    """'health', 'image', 'url', or None for a path this server does not have."""
    if path in _HEALTH_PATHS:
        return "health"
    match = _PREDICT_PATH.fullmatch(path)
    return match["kind"] if match else None


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 (EXIF orientation applied, like the container)."""
    if not data:
        raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequestImageSizeBytes", "the image is empty")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # most codecs return None on bad data, a few assert
        image = None
    if image is None:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequestImageFormat",
            f"cannot decode {len(data)} bytes as an image: expected JPEG, PNG, BMP, GIF, WebP or "
            f"TIFF, but the data starts with {data[:12]!r}",
        )
    return image


def multipart_image(content_type: str, body: bytes) -> bytes:
    """The image of a multipart/form-data body: field ``imageData``, else the first file."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    parts: list[Message] = msg.get_payload() if msg.is_multipart() else []  # type: ignore[assignment]
    if not parts:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequest",
            "multipart body has no parts: check the boundary in Content-Type",
        )
    names = [p.get_param("name", header="content-disposition") for p in parts]
    chosen = next((p for p, n in zip(parts, names, strict=True) if n == IMAGE_FIELD), None)
    chosen = chosen or next((p for p in parts if p.get_filename()), None)
    if chosen is None:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequest",
            f"multipart body needs a field {IMAGE_FIELD!r} or a file part, but has fields {names}",
        )
    data = chosen.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def url_from_json(body: bytes) -> str:
    """``{"url": ...}``; Custom Vision's cloud API spells it ``Url``, so case is ignored."""
    want = 'the body must be a JSON object like {"url": "https://host/image.jpg"}'
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequest", f"{want}: {exc}") from exc
    items = data.items() if isinstance(data, dict) else []
    url = next((v for k, v in items if isinstance(k, str) and k.lower() == "url"), None)
    if not isinstance(url, str) or not url:
        raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequest", f"{want}, but got {body[:80]!r}")
    return url


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; the check on the first URL must hold for all."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in URL_SCHEMES:
            raise urllib.error.URLError(f"redirect to {redact(newurl)!r} refused: not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _url_opener() -> urllib.request.OpenerDirector:
    """http(s) only: no file:, ftp: or data: handlers at all (build_opener would add them)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpOnlyRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def fetch_image(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """Download ``url`` (http or https) with a size cap and a deadline."""
    safe = redact(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in URL_SCHEMES or not parts.netloc:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequestInvalidUri",
            f"url must be http:// or https://, but got {safe!r}",
        )
    too_big = f"the image at {safe} is larger than {max_bytes} bytes"
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": f"edgesight/{__version__}"})
    try:
        with _url_opener().open(request, timeout=timeout_s) as resp:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequestImageSizeBytes", too_big)
            chunks, total = [], 0
            while chunk := resp.read(READ_CHUNK_BYTES):
                total += len(chunk)
                if total > max_bytes:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequestImageSizeBytes", too_big)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"download took longer than {timeout_s:g} s")
                chunks.append(chunk)
    except RequestError:
        raise
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
        exc.close()
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (OSError, HTTPException, ValueError) as exc:  # timeouts, resets, bad URLs
        reason = str(exc) or type(exc).__name__
    else:
        return b"".join(chunks)
    raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequestImageUrl", f"fetching {safe}: {reason}")


def predictions_json(
    predictions: Detections | Classifications, labels: list[str], width: int, height: int
) -> list[dict[str, Any]]:
    """Custom Vision ``predictions``: boxes best first; every class of a classifier, best first;
    8 decimals like the container (the shape is shared with the MQTT result: payloads.py)."""
    return custom_vision_predictions(predictions, labels, width, height, CUSTOM_VISION_SHAPE)


def created_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
