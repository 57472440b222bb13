"""Pin the process's time zone for a test: EXIF times without an offset and the line tallies'
hour and day periods are local time, so expected values need a known zone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def pinned_timezone(rule: str = "UTC") -> Iterator[None]:
    """``TZ`` set to a POSIX rule (no tz database needed) inside the block, restored after."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = rule
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
