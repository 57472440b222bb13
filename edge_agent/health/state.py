"""The online/degraded verdict, from two kinds of cause.

Failed frames: degraded at the first, online again once frames have succeeded for a while with
no new failure, so a passing fault (one corrupt frame, a runtime hiccup) does not leave a
dashboard red for good. Held conditions (a camera that is down, ``hold(cause, why)``): degraded
while one lasts, online as soon as the last is released (the camera is back: no delay)."""

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
        self._frames_failing = False  # a failure, and not yet clear_after_s of success since
        self._last_failure = 0.0
        self._held: dict[str, str] = {}  # cause -> why, while it lasts
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def held(self) -> dict[str, str]:
        """The conditions holding the agent degraded now (cause -> why)."""
        with self._lock:
            return dict(self._held)

    def failed(self) -> None:
        with self._lock:
            self._last_failure = self._clock()
            self._frames_failing = True
            self._settle()

    def succeeded(self) -> None:
        if not self._frames_failing:  # the per-frame path: no lock when nothing can change
            return
        with self._lock:
            if self._clock() - self._last_failure >= self._clear_after_s:
                self._frames_failing = False
                self._settle()

    def hold(self, cause: str, why: str | None) -> None:
        """Degraded because of ``cause`` (said as ``why``) until ``hold(cause, None)``."""
        with self._lock:
            if why is None:
                self._held.pop(cause, None)
            else:
                self._held[cause] = why
            self._settle()

    def _settle(self) -> None:
        """The caller holds the lock: the verdict from the causes, told if it changed."""
        state = DEGRADED if self._frames_failing or self._held else ONLINE
        if state != self._state:
            self._state = state
            self._on_change(state)  # under the lock: transitions are told in order
