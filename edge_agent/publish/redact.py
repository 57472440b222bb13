"""Secrets never leave the device: the config ``get_config`` answers with, redacted by key name
and inside URLs (docs/commands.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What a secret is replaced with.
REDACTED = "***"

#: A key is secret when one of its ``_``-separated words (after lower-casing, ``-`` as ``_``)
#: is one of these, or it ends in ``private_key`` / ``api_key``.
SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "token", "credentials"})
_SECRET_SUFFIXES = ("private_key", "api_key", "apikey")
_URL_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")
_QUERY_PARAM = re.compile(r"([?&;])([^=&#;]*)=([^&#;]*)")


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret (see SECRET_WORDS)."""
    name = key.lower().replace("-", "_")
    return bool(SECRET_WORDS & set(name.split("_"))) or name.endswith(_SECRET_SUFFIXES)


def redact_url(text: str) -> str:
    """Mask a URL's userinfo password (the whole userinfo when there is no ``:``) and the values
    of query parameters with secret names; any other text is returned unchanged."""
    match = _URL_AUTHORITY.match(text)
    if match is None:
        return text
    scheme, authority = match.groups()
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = (f"{user}:{REDACTED}" if colon else REDACTED) + "@" + host
    rest = _QUERY_PARAM.sub(
        lambda m: f"{m[1]}{m[2]}={REDACTED}" if is_secret_key(m[2]) else m[0],
        text[match.end() :],
    )
    return scheme + authority + rest


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every secret replaced by ``"***"`` (docs/commands.md)."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                str(k): (REDACTED if v is not None and is_secret_key(str(k)) else walk(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return redact_url(value) if isinstance(value, str) else value

    return dict(walk(config))
