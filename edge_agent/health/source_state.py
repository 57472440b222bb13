"""Each source's state in words, for the status payload, the stats topic and the health verdict.

Counters say how much happened; this says what is happening now: a camera that stopped sending
frames is `stalled` at once, `reconnecting` while it is retried quickly, `failed` (with the
backend's reason, "RTSP 404 Not Found") once it stays away, and `streaming` again when frames
come back. Sources set it from their capture thread; listeners (the agent: health and status)
hear every change, in order, from that thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

#: Opening the source for the first time (a camera not reached yet).
STARTING = "starting"
#: Frames are arriving.
STREAMING = "streaming"
#: The source was open but no frame came within the read timeout (a frozen camera).
STALLED = "stalled"
#: Lost, and being retried quickly: the camera is likely rebooting.
RECONNECTING = "reconnecting"
#: Still away after the quick retries, or refused for a reason a retry rarely cures (404,
#: 401): retried at a slower pace, said with its reason.
FAILED = "failed"
#: A file or folder read to its end (on_eof: stop).
ENDED = "ended"
STATES = (STARTING, STREAMING, STALLED, RECONNECTING, FAILED, ENDED)
#: States in which a live source gives no frames: the agent is degraded while one lasts.
DOWN_STATES = (STALLED, RECONNECTING, FAILED)


@dataclass(frozen=True)
class SourceStatus:
    """One source's state as published (`source_state.<id>` in the status payload)."""

    state: str
    reason: str | None
    since: float  # wall-clock time the state began
    last_frame_ts: float | None  # capture time of the newest frame delivered
    width: int | None = None
    height: int | None = None

    def payload(self) -> dict[str, Any]:
        return asdict(self)


Listener = Callable[[str, SourceStatus], None]


class SourceStates:
    """Thread-safe states of every source; `listen(fn)` hears each change (not each frame)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._states: dict[str, SourceStatus] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()

    def listen(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def set(self, source_id: str, state: str, reason: str | None = None) -> bool:
        """Enter `state` (with its reason); True if that changed anything. Listeners are told
        under the lock, so two quick changes reach them in the order they happened."""
        if state not in STATES:
            raise ValueError(f"source state must be one of {', '.join(STATES)}, not {state!r}")
        with self._lock:
            old = self._states.get(source_id)
            if old is not None and old.state == state and old.reason == reason:
                return False
            new = SourceStatus(
                state,
                reason,
                self._clock(),
                old.last_frame_ts if old else None,
                old.width if old else None,
                old.height if old else None,
            )
            self._states[source_id] = new
            for listener in list(self._listeners):
                listener(source_id, new)
            return True

    def frame(self, source_id: str, ts: float, width: int, height: int) -> None:
        """A frame was delivered: the per-frame path, no listener is called (the state is
        set to streaming by the source itself, once)."""
        old = self._states.get(source_id)
        if old is None:
            return
        if old.last_frame_ts != ts or old.width != width or old.height != height:
            with self._lock:
                current = self._states.get(source_id, old)
                self._states[source_id] = replace(
                    current, last_frame_ts=ts, width=width, height=height
                )

    def get(self, source_id: str) -> SourceStatus | None:
        return self._states.get(source_id)

    def down(self) -> list[str]:
        """Sources giving no frames now although they should (stalled, reconnecting, failed)."""
        with self._lock:
            return sorted(sid for sid, st in self._states.items() if st.state in DOWN_STATES)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {sid: st.payload() for sid, st in sorted(self._states.items())}
