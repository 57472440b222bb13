"""The one-line base64 form of a raw ed25519 public key, recognised without cryptography.

Config parsing needs to tell such a key from a file path; importing cryptography for that
would cost every device ~5 MB of memory, signatures or not.
"""

from __future__ import annotations

import base64
import binascii

PUBLIC_KEY_BYTES = 32  # a raw ed25519 public key (RFC 8032, 5.1.5)
RAW_KEY_BASE64_CHARS = 44  # base64 of 32 bytes, with one '=' of padding


def decode_raw_key(text: str | bytes) -> bytes | None:
    """The 32 key bytes if ``text`` is exactly the base64 raw form, else None."""
    text = text.strip()
    if len(text) != RAW_KEY_BASE64_CHARS:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == PUBLIC_KEY_BYTES else None


def is_raw_public_key(text: str) -> bool:
    """True if ``text`` is a base64 raw key rather than a path (config uses this to resolve)."""
    return decode_raw_key(text) is not None
