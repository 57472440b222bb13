"""When to retry a camera that went away: quickly while it is likely rebooting, slowly after.

A camera restart (power blip, firmware update, PoE switch reboot) takes 10 to 60 s. Doubling the
wait from the first failure, as the agent used to, meant a 10 s restart cost 15 to 17 s of
results: the retry that would have found the camera back was scheduled seconds after it
returned. So an outage has two phases:

- **quick** (the first ``fast_for_s``): retry every ``initial_s``, jittered by +-20 % so a site
  of cameras behind one switch does not retry in lock-step;
- **slow** (after that): the wait doubles from ``initial_s`` up to ``max_s`` (jittered too): a
  camera that stays away is not hammered, and is still found within ``max_s`` of its return
  (jittered below it).

A failure that a retry rarely cures (a wrong path, a wrong password) skips the quick phase.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

#: +-20 %: enough to spread retries of many cameras, small enough to keep the quick phase quick.
JITTER = 0.2


class ReconnectPolicy:
    """Waits between reopen attempts during one outage; `reset()` when frames flow again."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        fast_for_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self.fast_for_s = fast_for_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._outage_start: float | None = None
        self._slow_delay = initial_s
        self.attempts = 0  # failed attempts in this outage

    @property
    def in_outage(self) -> bool:
        return self._outage_start is not None

    def down_for_s(self) -> float:
        """How long this outage has lasted (0 when there is none)."""
        return 0.0 if self._outage_start is None else self._clock() - self._outage_start

    def quick(self) -> bool:
        """Still in the quick phase of this outage."""
        return self.in_outage and self.down_for_s() < self.fast_for_s

    def next_delay(self, lasting: bool = False) -> float:
        """The wait before the next attempt, after a failure. `lasting`: a failure a retry rarely
        cures (404, 401), which goes straight to the slow phase."""
        now = self._clock()
        if self._outage_start is None:
            self._outage_start = now
        self.attempts += 1
        if lasting and self.quick():
            self._outage_start = now - self.fast_for_s  # the quick phase is over for this one
        if self.quick():
            base = self.initial_s
        else:
            base = self._slow_delay
            self._slow_delay = min(self._slow_delay * 2, self.max_s)
        return min(base * (1 + self._rng.uniform(-JITTER, JITTER)), self.max_s)

    def reset(self) -> None:
        """Frames flow again: the next outage starts quick."""
        self._outage_start = None
        self._slow_delay = self.initial_s
        self.attempts = 0
