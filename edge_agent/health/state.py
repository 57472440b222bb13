"""The online/degraded verdict: degraded at the first failed frame, online again once frames
have succeeded for a while with no new failure, so a passing fault (one corrupt frame, a
runtime hiccup) does not leave a dashboard red for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

ONLINE, DEGRADED = "online", "degraded"


class HealthState:
    """Thread-safe; ``on_change(state)`` is called outside the lock on every transition."""

    def __init__(
        self,
        on_change: Callable[[str], None],
        clear_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._clear_after_s = clear_after_s
        self._clock = clock
        self._state = ONLINE
        self._last_failure = 0.0
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def failed(self) -> None:
        with self._lock:
            self._last_failure = self._clock()
            changed = self._state != DEGRADED
            self._state = DEGRADED
        if changed:
            self._on_change(DEGRADED)

    def succeeded(self) -> None:
        if self._state == ONLINE:  # the per-frame path: no lock when nothing can change
            return
        with self._lock:
            changed = (
                self._state == DEGRADED
                and self._clock() - self._last_failure >= self._clear_after_s
            )
            if changed:
                self._state = ONLINE
        if changed:
            self._on_change(ONLINE)
