"""The one error type of ``edge-agent serve`` and its JSON shape."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

#: Where a response has no more specific code (malformed request line, 414, 431, 501, ...).
GENERIC_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 500: "ErrorUnknown"}


class RequestError(Exception):
    """A request the server refuses: HTTP status, Custom Vision-style error code, message."""

    def __init__(self, status: HTTPStatus, code: str, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.allow = status, code, message, allow


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
