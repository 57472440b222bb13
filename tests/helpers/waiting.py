"""Waiting for something another thread or process makes true, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Long enough for a loaded CI machine; a test that passes never waits it out.
WAIT_S = 10.0


def wait_until(
    predicate: Callable[[], object], timeout_s: float = WAIT_S, poll_s: float = 0.02
) -> bool:
    """Poll ``predicate()`` until it is true; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True
