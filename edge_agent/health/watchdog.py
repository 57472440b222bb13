"""systemd integration: the sd_notify client and the watchdog that pings only while the pipeline
advances.

A plain ``WATCHDOG=1`` timer would keep pinging while a camera read or the runtime hangs
forever; systemd would never restart the agent. Here the ping is earned: it is sent only when
the stats registry's results counter moved since the last ping. Protocol:
https://www.freedesktop.org/software/systemd/man/sd_notify.html (a datagram of
newline-separated ``KEY=VALUE`` lines to the unix socket named by ``$NOTIFY_SOCKET``; a name
starting with ``@`` is in the abstract namespace).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.health.stats import StatsRegistry
    from edge_agent.types import Frame, Result

log = logging.getLogger(__name__)

#: How often STATUS= is refreshed when systemd set no watchdog (WatchdogSec= absent), s.
STATUS_INTERVAL_S = 10.0
#: Longest a reload (stop, load the new model, first result) may take while the watchdog keeps
#: pinging for it: systemd's watchdog stays armed while the unit reloads, and a model load on a
#: Raspberry Pi takes seconds to tens of seconds. A reload hung for longer gets no ping.
RELOAD_GRACE_S = 120.0

#: Phases told in STATUS=.
STARTING, WAITING, RUNNING, STALLED, RELOADING, STOPPING = (
    "starting", "waiting for the first result", "running", "stalled", "reloading", "stopping",
)  # fmt: skip


class SdNotifier:
    """Sends sd_notify datagrams; does nothing when ``$NOTIFY_SOCKET`` is unset (not under
    systemd). A failed send is logged once and never raised: the pipeline must not stop
    because the service manager went away."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SdNotifier:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying", address)
            address = None
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram (``notify(READY=1, STATUS="...")``); True
        if sent. Newlines in a value would start a new field, so they become spaces."""
        if self.address is None:
            return False
        text = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        # Abstract socket: the leading '@' stands for a NUL byte (sd_notify(3)).
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(text.encode(), target)
                return True
            except OSError as exc:
                if not self._warned:
                    log.warning("sd_notify to %s failed: %s", self.address, exc)
                    self._warned = True
                return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval_s(
    env: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """The watchdog timeout systemd set (``$WATCHDOG_USEC``) in seconds, or None: unset, not a
    positive integer, or ``$WATCHDOG_PID`` names another process (sd_watchdog_enabled(3))."""
    env = os.environ if env is None else env
    usec, for_pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    if for_pid and for_pid != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog off", usec)
        return None
    return value / 1e6 if value > 0 else None


class SystemdWatchdog:
    """READY, RELOADING, STOPPING, STATUS and the earned WATCHDOG=1 ping for ``edge-agent run``.

    The rule: every ``timeout / 2`` a tick reads the attached agent's results counter (a frame
    that became a result, inferred or kept from the model by the motion gate); it pings only
    if the counter moved since the last ping. Before the first result of a reload it pings for
    at most ``RELOAD_GRACE_S``. Thread "sd-watchdog" runs the ticks; ``tick()`` is one of them.
    """

    def __init__(
        self,
        notifier: SdNotifier,
        timeout_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.timeout_s = timeout_s
        self.interval_s = timeout_s / 2 if timeout_s else STATUS_INTERVAL_S
        self._clock = clock
        self._stats: StatsRegistry | None = None
        self._run_id: str | None = None
        self._phase = STARTING
        self._ready_sent = False  # READY=1 once per start or reload
        self._reload_started: float | None = None
        self._pinged_results = 0
        self._last_results = 0
        self._last_tick = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if not self.notifier.enabled or self._thread is not None:
            return
        self.notifier.notify(STATUS=STARTING)
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.notifier.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    # -- what run_agent tells ------------------------------------------------------------------

    def attach(self, stats: StatsRegistry, run_id: str | None) -> None:
        """A started agent (after its model loaded and its sources opened) to watch."""
        with self._lock:
            self._stats, self._run_id = stats, run_id
            self._pinged_results = self._last_results = 0
            self._last_tick = self._clock()
            self._ready_sent = False
            if self._phase != RELOADING:
                self._phase = WAITING

    def result_seen(self) -> None:
        """Called on every result (the post thread): the first one after a start or a reload
        is when the agent is ready."""
        if self._ready_sent:
            return
        with self._lock:
            if self._ready_sent or self._stats is None:
                return
            self._ready_sent = True
            self._phase, self._reload_started = RUNNING, None
            self.notifier.notify(READY=1, STATUS=self._status_line(None))

    def reloading(self) -> None:
        """The agent stops to start again with a new config (SIGHUP or ``reload_config``)."""
        with self._lock:
            self._phase, self._reload_started = RELOADING, self._clock()
            self._stats = None
            self.notifier.notify(
                RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000, STATUS=RELOADING
            )

    def stopping(self) -> None:
        """SIGTERM, or the sources ended: told once."""
        with self._lock:
            if self._phase == STOPPING:
                return
            self._phase = STOPPING
            self.notifier.notify(STOPPING=1, STATUS=STOPPING)

    # -- the tick ------------------------------------------------------------------------------

    def tick(self) -> bool:
        """Send STATUS=, and WATCHDOG=1 when earned; True if pinged."""
        with self._lock:
            now = self._clock()
            results = self._stats.total("source", "results") if self._stats else 0
            fps = (results - self._last_results) / max(now - self._last_tick, 1e-9)
            self._last_results, self._last_tick = results, now
            ping = self._earned(results, now)
            if self._phase in (RUNNING, STALLED):
                self._phase = RUNNING if ping else STALLED
            fields: dict[str, str | int] = {"STATUS": self._status_line(fps)}
            if ping and self.timeout_s:
                fields["WATCHDOG"] = 1
                self._pinged_results = results
            self.notifier.notify(**fields)
            return "WATCHDOG" in fields

    def _earned(self, results: int, now: float) -> bool:
        if self._phase == RELOADING:  # systemd's watchdog stays armed: a bounded grace
            return now - (self._reload_started or now) < RELOAD_GRACE_S
        if self._phase in (STARTING, WAITING, STOPPING):
            return False  # systemd arms the watchdog only once READY=1 was sent
        return results > self._pinged_results

    def _status_line(self, fps: float | None) -> str:
        """What ``systemctl status`` shows: phase, fps over the last tick, results, run id."""
        parts = [self._phase]
        if fps is not None:
            parts.append(f"{fps:.1f} fps")
        if self._stats is not None:
            parts.append(f"{self._stats.total('source', 'results')} results")
        if self._run_id:
            parts.append(f"run {self._run_id}")
        return ", ".join(parts)


class ReadySink:
    """A sink that tells the watchdog about every result (the first one sends READY=1)."""

    name = "systemd"
    needs_frame = False

    def __init__(self, watchdog: SystemdWatchdog) -> None:
        self._watchdog = watchdog

    def emit(self, result: Result, frame: Frame | None) -> None:
        self._watchdog.result_seen()

    def close(self) -> None:
        pass
