"""Cameras and network streams: bounded calls, reconnects that follow the camera, true times.

Every OpenCV call runs under a GuardedCapture (capture_guard.py): an open or a read that passes
``capture_timeout_s`` fails with a reason instead of blocking the agent, and ``close()`` from
another thread (shutdown) frees a blocked read at once. Failures are retried as reconnect.py
says, and each source's state (source_state.py) says what is happening in words. Frames are
stamped and drained by live_clock.py, so a result's ``ts`` is when its picture was taken.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator

import cv2
import numpy as np

from edge_agent.capture_guard import CaptureError, CaptureTimeout, GuardedCapture
from edge_agent.capture_reason import NO_REASON
from edge_agent.health.source_state import FAILED, RECONNECTING, STALLED, STREAMING
from edge_agent.live_clock import LiveClock
from edge_agent.reconnect import ReconnectPolicy
from edge_agent.sources import FrameSource, _Item, redact

log = logging.getLogger("edge_agent.sources")

#: A read this close to the capture timeout ended by FFmpeg's interrupt: its frame is stale.
STALL_FRACTION = 0.8
#: Reasons of one outage logged at WARNING (the loss, and why reopening fails); more at INFO.
WARNINGS_PER_OUTAGE = 2
#: Failures a quick retry rarely cures: a wrong path or wrong credentials (HTTP/RTSP codes).
_LASTING = re.compile(r"\b40[0134]\b")


#: One decoder thread: FFmpeg's frame threads hold a decoded frame back per extra thread
#: (measured: RTSP pictures 137 ms old at read time with the default, 69 ms with one), and the
#: cores belong to inference (files decode in one thread for the same reason).
STREAM_PARAMS = (cv2.CAP_PROP_N_THREADS, 1)
#: FFmpeg options for every stream open (OPENCV_FFMPEG_CAPTURE_OPTIONS, "key;value|..."):
#: RTSP over TCP (OpenCV's default, which setting the variable would otherwise drop), and no
#: frame-rate probing: FFmpeg read 27 frames (1.9 s) of an RTSP stream before open returned
#: only to estimate a rate the SDP already gives; without it the open takes 0.57 s.
STREAM_OPTIONS = {"rtsp_transport": "tcp", "fpsprobesize": "0"}
OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def stream_options() -> str:
    """Add STREAM_OPTIONS to OPENCV_FFMPEG_CAPTURE_OPTIONS, keeping every key the user set
    there (their rtsp_transport;udp wins). One process-wide variable, read at every FFmpeg
    open: set once, the same for every source, so opens in parallel threads cannot race."""
    current = os.environ.get(OPTIONS_ENV, "")
    pairs = [p for p in current.split("|") if p]
    keys = {p.split(";", 1)[0] for p in pairs}
    pairs += [f"{k};{v}" for k, v in STREAM_OPTIONS.items() if k not in keys]
    value = "|".join(pairs)
    if value != current:
        os.environ[OPTIONS_ENV] = value
    return value


def _target(uri: str | int, kind: str) -> tuple[str | int, int, bool]:
    """(what VideoCapture opens, the backend, whether it honours FFmpeg's timeouts). Streams go
    through FFMPEG, the only backend with open/read timeouts; other backends (V4L2) refuse
    parameters they do not know, so cameras get none and only the guard's deadline."""
    if kind == "stream":
        return str(uri), cv2.CAP_FFMPEG, True
    if isinstance(uri, int) or uri.strip().isdigit():
        return int(uri), cv2.CAP_ANY, False
    return uri, cv2.CAP_ANY, False


def failure_reason(exc: CaptureError) -> str:
    """The short reason of a failed call in words (the guard's, from the backend's own error)."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    if isinstance(exc, CaptureTimeout):
        return f"no answer within {exc.timeout_s:g} s"
    return str(exc)


class LiveSource(FrameSource):
    """A camera or network stream: failures are retried until `stop`, never fatal."""

    def open(self) -> None:
        """Nothing to check: a camera or stream that is not there yet is retried, not refused."""
        cfg = self._cfg
        target, api, ffmpeg = _target(cfg.uri, self.kind)
        self._origin = redact(str(cfg.uri))
        if ffmpeg:
            stream_options()
        self._guard = GuardedCapture(
            target,
            api=api,
            params=STREAM_PARAMS if ffmpeg else (),
            open_timeout_s=cfg.capture_timeout_s,
            read_timeout_s=cfg.capture_timeout_s,
            backend_timeouts=ffmpeg,
            label=f"{self.source_id} ({self._origin})",
        )
        self._policy = ReconnectPolicy(
            cfg.reconnect_initial_delay_s, cfg.reconnect_max_delay_s, cfg.reconnect_fast_for_s
        )
        self._clock = LiveClock()
        self._size: tuple[int, int] | None = None
        self._last_frame: float | None = None  # monotonic time of the last frame kept
        self._outage_warnings = 0  # reasons logged at WARNING in this outage
        self._reason: str | None = None  # of the outage under way, as last logged

    def close(self) -> None:
        """Also from another thread: closing the guard frees a read blocked in the backend."""
        self._closed = True
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.close()
        super().close()

    def _release(self) -> None:
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.close()

    def _images(self) -> Iterator[_Item]:
        first = True
        while not self._stopped():
            if not self._guard.is_open:
                if not first:
                    self.metrics.reopens.inc()
                first = False
                try:
                    self._guard.open()
                except CaptureError as exc:
                    if self._failed(exc, opened=False):
                        return
                    continue
                self._clock.opened(self._prop(cv2.CAP_PROP_FPS))
            started = time.monotonic()
            try:
                image = self._guard.read()
            except CaptureError as exc:
                if self._failed(exc, opened=True):
                    return
                continue
            ended, wall = time.monotonic(), time.time()
            if ended - started >= STALL_FRACTION * self._cfg.capture_timeout_s:
                # FFmpeg's interrupt fired (it is armed a little below our deadline) and RTSP
                # handed back an old decoded frame as if it were new (measured: one every 4.5 s
                # from a frozen camera): a stall, not a frame.
                self._guard.close()
                stall = CaptureTimeout(
                    f"{self._origin}: read took {ended - started:.1f} s",
                    "read",
                    self._cfg.capture_timeout_s,
                )
                if self._failed(stall, opened=True):
                    return
                continue
            if self._guard.reinit_line is not None:
                # OpenCV scales a stream whose frame size changed into the size it opened with
                # (measured, RTSP and MJPEG): reopen, and the next frames have the true size.
                log.info(
                    "source %s: the stream changed its picture (%s); reopening to read it at "
                    "its new size",
                    self.source_id,
                    self._guard.reinit_line,
                )
                self._guard.close()
                continue
            pts, pos = self._guard.last_times
            ts = self._clock.stamp(started, ended, wall, pts, pos)
            if ts is None:
                self.metrics.frames_drained.inc()
                continue
            self._streaming(image)
            yield image, self._origin, ts

    def _prop(self, prop_id: int) -> float | None:
        try:
            return self._guard.get(prop_id)
        except CaptureError:
            return None  # the next read() says what went wrong

    def _streaming(self, image: np.ndarray) -> None:
        """A frame kept: say so once after an outage, and notice a new frame size."""
        now = time.monotonic()
        if self._policy.in_outage or self._reason is not None:
            gap = now - (self._last_frame or now - self._policy.down_for_s())
            log.info(
                "source %s: streaming again from %s after %.1f s without frames (%d attempt(s))",
                self.source_id,
                self._origin,
                gap,
                self._policy.attempts,
            )
        self._last_frame = now
        self._outage_warnings = 0
        self._policy.reset()
        self._reason = None
        status = self._states.get(self.source_id)  # lock-free: this runs for every frame
        if status is None or status.state != STREAMING:
            self._states.set(self.source_id, STREAMING)
        size = (int(image.shape[1]), int(image.shape[0]))
        if self._size is not None and size != self._size:
            log.warning(
                "source %s: frame size changed from %dx%d to %dx%d",
                self.source_id,
                *self._size,
                *size,
            )
        self._size = size

    def _failed(self, exc: CaptureError, opened: bool) -> bool:
        """Log, set the state and wait before the next attempt; True if stopped meanwhile."""
        if self._stopped():  # close() from shutdown freed a blocked call: not a failure
            return True
        reason = failure_reason(exc)
        delay = self._policy.next_delay(lasting=bool(_LASTING.search(reason)))
        if opened and isinstance(exc, CaptureTimeout):
            state = STALLED
        else:
            state = RECONNECTING if self._policy.quick() else FAILED
        previous = self._states.get(self.source_id)
        gave_up_quick = state == FAILED and (previous is None or previous.state != FAILED)
        self._states.set(self.source_id, state, reason)
        if gave_up_quick and reason == self._reason:
            log.warning(
                "source %s: %s still down after %.0f s: %s; retrying at most every %g s",
                self.source_id,
                self._origin,
                self._policy.down_for_s(),
                reason,
                self._policy.max_s,
            )
        else:
            # Each new reason once, not each attempt: at WARNING the loss and why reopening
            # fails (stream ended, then refused), later changes at INFO (a camera rebooting
            # goes from reset to refused to 404); a failure without a named cause during an
            # outage adds nothing to the one already logged.
            new = reason != self._reason and not (self._reason and reason == NO_REASON)
            if new:
                self._outage_warnings += 1
            level = logging.DEBUG
            if new:
                level = (
                    logging.WARNING
                    if self._outage_warnings <= WARNINGS_PER_OUTAGE
                    else logging.INFO
                )
            log.log(
                level,
                "source %s: %s %s: %s; retry in %.2g s",
                self.source_id,
                "lost" if opened else "cannot open",
                self._origin,
                reason,
                delay,
            )
        self._reason = reason
        return self._wait(delay)
