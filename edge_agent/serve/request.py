"""Request parsing and answers for ``edge-agent serve``: routes, image bodies (raw and
multipart), the /url body, and the Custom Vision answer shape. Decoding with its pixel limit is
edge_agent/serve/images.py; /url downloads are edge_agent/serve/fetch.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from edge_agent.publish.payloads import (
    CUSTOM_VISION_SHAPE,
    CUSTOM_VISION_THRESHOLDS_SHAPE,
    custom_vision_predictions,
)
from edge_agent.serve.errors import RequestError
from edge_agent.types import Classifications, Detections

#: Largest request body, bytes. The Custom Vision container takes 4 MiB; 20 MiB fits a
#: full-resolution phone JPEG or PNG. Applies to images fetched by /url too.
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
#: The multipart field the container reads first (its README: curl -F imageData=@file.jpg).
IMAGE_FIELD = "imageData"

_PREDICT_PATH = re.compile(
    r"(?:(?i:/customvision/v\d+\.\d+/prediction)?/[^/]+)?"  # /<project>, maybe the cloud's
    r"(?:/(?:classify|detect)/iterations/[^/]+)?"
    r"/(?P<kind>image|url)(?:/nostore)?/?"
)
_HEALTH_PATHS = frozenset({"/", "/health"})
#: The query parameter that adds ``passesThreshold`` to each prediction. Opt-in, because
#: Custom Vision has no such field and its clients must get exactly the container's answer;
#: a query parameter (not a header) because Custom Vision's own options travel in the query
#: (the cloud API's ``?application=``), and any client, curl or a URL in a settings page can
#: set one, while typed SDKs and some proxies do not pass custom headers on.
THRESHOLDS_PARAM = "thresholds"
_TRUE, _FALSE = ("", "1", "true"), ("0", "false")


def route(path: str) -> str | None:
    """'health', 'image', 'url', or None for a path this server does not have."""
    if path in _HEALTH_PATHS:
        return "health"
    match = _PREDICT_PATH.fullmatch(path)
    return match["kind"] if match else None


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


def thresholds_requested(query: str) -> bool:
    """Whether the query string asks for ``passesThreshold``: ``thresholds=true`` (or ``1``, or
    a bare ``thresholds``); ``false``/``0`` or no such parameter: no. Other parameters (the
    cloud API's ``application``) are ignored; the last ``thresholds`` wins."""
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == THRESHOLDS_PARAM]
    if not values:
        return False
    value = values[-1].strip().lower()
    if value not in _TRUE + _FALSE:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequest",
            f"query parameter {THRESHOLDS_PARAM} must be true or false (1 or 0), "
            f"but got {values[-1][:40]!r}",
        )
    return value in _TRUE


def predictions_json(
    predictions: Detections | Classifications,
    labels: list[str],
    width: int,
    height: int,
    class_thresholds: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Custom Vision ``predictions``: boxes best first; every class of a classifier, best first;
    8 decimals like the container (the shape is shared with the MQTT result: payloads.py).
    With ``class_thresholds`` (the predictor's, one per label) each prediction also says
    ``passesThreshold``; without, the answer is exactly the container's."""
    if class_thresholds is None:
        return custom_vision_predictions(predictions, labels, width, height, CUSTOM_VISION_SHAPE)
    return custom_vision_predictions(
        predictions, labels, width, height, CUSTOM_VISION_THRESHOLDS_SHAPE, None, class_thresholds
    )


def created_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
