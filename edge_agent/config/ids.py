"""The names a config gives (the device, its sources) become MQTT topic levels as written.

A name that is not one clean topic level is refused with the character at fault, not rewritten:
``shelf cam`` published as ``shelf_cam`` is a device nobody finds, and ``a/b`` would publish one
level deeper than every subscriber expects.
"""

from __future__ import annotations

from collections.abc import Collection
from string import ascii_letters, digits

#: Source ids: safe in a topic level, a file name, a URL and a shell word, without quoting.
SOURCE_ID_CHARS = ascii_letters + digits + "_-"
#: Device ids may also hold '.': the default is the host name, which may be fully qualified
#: (RFC 1123 host names are letters, digits, '-' and '.'). A dot is safe in a topic level.
DEVICE_ID_CHARS = SOURCE_ID_CHARS + "."


def _describe(allowed: str) -> str:
    extra = ", ".join(repr(ch) for ch in allowed.removeprefix(ascii_letters + digits))
    return f"letters, digits, {extra}"


def check_id(value: str, allowed: str, reserved: Collection[str]) -> str:
    """``value`` if it is a usable name; ValueError names the first character at fault."""
    if not value:
        raise ValueError(f"must not be empty ({_describe(allowed)})")
    for position, ch in enumerate(value, 1):
        if ch not in allowed:
            raise ValueError(
                f"character {ch!r} at position {position} is not allowed in {value!r}; "
                f"use {_describe(allowed)}"
            )
    if value in reserved:
        raise ValueError(f"{value!r} is reserved in MQTT topics; choose another name")
    return value
