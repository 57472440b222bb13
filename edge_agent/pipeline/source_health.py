"""Each source's state into the agent's health verdict and its retained status.

A live source that is down (stalled, reconnecting, failed) holds the agent degraded until none
is (no clear delay: the camera is back), beside the failed-frame cause (its own
``degraded_clear_s``). Every state change republishes the retained status, at most once per
STATUS_MIN_INTERVAL_S and always ending on the latest, so a flapping camera cannot flood the
broker. Source states are heard on the capture thread under SourceStates' lock: nothing here
blocks there, the status goes out from a thread of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from edge_agent.health.source_state import DOWN_STATES, SourceStates, SourceStatus
from edge_agent.health.state import HealthState

if TYPE_CHECKING:
    from edge_agent.publish.publisher import MqttPublisher

log = logging.getLogger("edge_agent.pipeline.agent")

#: Fewest seconds between two status messages caused by source state changes.
STATUS_MIN_INTERVAL_S = 1.0
#: The HealthState cause a down source holds.
CAUSE = "sources"


class StatusLink:
    """What the agent tells its retained status: health at once, source states coalesced,
    the thermal slowdown. ``publisher`` is set once it exists (None: nothing is published)."""

    def __init__(self, min_interval_s: float = STATUS_MIN_INTERVAL_S) -> None:
        self.publisher: MqttPublisher | None = None
        self._min_interval_s = min_interval_s
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def health_changed(self, state: str) -> None:
        if self.publisher is not None:
            self.publisher.set_status(state)
        log.log(logging.WARNING if state != "online" else logging.INFO, "agent status: %s", state)

    def thermal(self, info: dict[str, Any] | None) -> None:
        """The inference thread slowed down or sped up to cool: said in the status."""
        if self.publisher is not None:
            self.publisher.set_thermal(info)

    def poke(self) -> None:
        """A source's state changed: republish the status soon (never blocks)."""
        self._wanted.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="source-status", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stop.is_set():
                return
            self._wanted.clear()  # a change after this is sent by the next round
            publisher = self.publisher
            if publisher is not None:
                try:
                    publisher.refresh_status()
                except Exception:  # the status must never stop for one bad payload
                    log.exception("could not publish the source states")
            if self._stop.wait(self._min_interval_s):
                return


class SourceHealth:
    """Listens to ``states``: a live source (``live`` ids) that goes down holds ``health``
    degraded and is logged once at WARNING, its return at INFO; every change pokes ``link``."""

    def __init__(
        self,
        states: SourceStates,
        health: HealthState,
        live: Collection[str],
        link: StatusLink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health = health
        self._live = frozenset(live)
        self._link = link
        self._clock = clock
        self._down: dict[str, float] = {}  # source id -> when it went down (clock)
        states.listen(self._changed)

    def _changed(self, source_id: str, status: SourceStatus) -> None:
        self._link.poke()
        if source_id not in self._live:
            return
        down = status.state in DOWN_STATES
        was_down = source_id in self._down
        if down and not was_down:
            self._down[source_id] = self._clock()
            why = f"{status.state}: {status.reason}" if status.reason else status.state
            log.warning("agent degraded: source %s %s", source_id, why)
        elif not down and was_down:
            lasted = self._clock() - self._down.pop(source_id)
            log.info("source %s %s again after %.1f s down", source_id, status.state, lasted)
        if down != was_down:
            ids = sorted(self._down)
            self._health.hold(CAUSE, f"source(s) {', '.join(ids)} down" if ids else None)
