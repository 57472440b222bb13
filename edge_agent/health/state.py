"""The online/degraded verdict: degraded at the first failed frame, online again once frames
have succeeded for a while with no new failure, so a passing fault (one corrupt frame, a
runtime hiccup) does not leave a dashboard red for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

ONLINE, DEGRADED = "online", "degraded"


class HealthState:
    """Thread-safe; ``on_change(state)`` is called on every transition, under the lock, so two
    quick transitions reach the status topic in the order they happened (it must not call back
    into this object)."""

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
            if self._state != DEGRADED:
                self._state = DEGRADED
                self._on_change(DEGRADED)  # under the lock: transitions are told in order

    def succeeded(self) -> None:
        if self._state == ONLINE:  # the per-frame path: no lock when nothing can change
            return
        with self._lock:
            if (
                self._state == DEGRADED
                and self._clock() - self._last_failure >= self._clear_after_s
            ):
                self._state = ONLINE
                self._on_change(ONLINE)
