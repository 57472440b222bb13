"""One thread that runs a few periodic jobs (the publisher's heartbeat and stats): each at its
own interval, the first after its own delay; a job that raises is logged and runs again at its
next turn, so a heartbeat never stops for one bad turn."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    name: str
    every_s: float
    first_after_s: float
    run: Callable[[], None]


class Ticker:
    def __init__(self, jobs: Sequence[Job], thread_name: str) -> None:
        self.jobs = list(jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        start = time.monotonic()
        due = [start + job.first_after_s for job in self.jobs]
        while not self._stop.wait(max(0.0, min(due) - time.monotonic())):
            now = time.monotonic()
            for i, job in enumerate(self.jobs):
                if now < due[i]:
                    continue
                due[i] = now + job.every_s
                try:
                    job.run()
                except Exception:  # the next turn comes anyway
                    log.exception("%s failed; trying again in %.0f s", job.name, job.every_s)
