"""Capture times for live frames, and which frames the backend had buffered.

Measured with the RTSP test camera (docs/sources.md): FFmpeg reads ~1.8 s of stream while it
opens an RTSP session, and those ~27 frames come out of the first reads at once; after the
reader pauses, the frames that piled up in the socket do the same. Stamped with the time
``read()`` returned, results described a picture 1.2 to 1.9 s old as if it were current.

So, per live source:

- **Draining.** After every open, and after the reader was away for longer than a frame
  interval (inference, a stopped process), reads that return in less than half a frame
  interval came out of a buffer: they are discarded until a read has to wait for the camera
  (or ``DRAIN_BUDGET_S`` passes, for a decoder too slow to ever catch up).
- **Presentation time.** Where the stream carries timestamps (RTSP/RTP: CAP_PROP_PTS is set and
  CAP_PROP_POS_MSEC advances with it), a frame's time is its presentation time plus the
  smallest (read time - presentation time) seen over the last ``WINDOW_S``: the delay of the
  quickest recent frame, so a frame that waited in a buffer keeps its own, older time. The
  window follows a camera clock that drifts against ours; a jump (a camera restarting its
  timestamps) starts over.
- **Otherwise** (MJPEG over HTTP: no PTS, and POS_MSEC counts an assumed 25 fps) a frame's time
  is when its read returned, which draining makes current.
"""

from __future__ import annotations

import math
from collections import deque

#: FFmpeg's AV_NOPTS_VALUE as OpenCV reports it through CAP_PROP_PTS: the stream has no PTS.
NO_PTS = -(2**63)
#: A read this much shorter than the frame interval came from a buffer, not from the camera.
BUFFERED_FRACTION = 0.5
#: The reader was away this many frame intervals: frames may have piled up meanwhile.
AWAY_INTERVALS = 1.5
#: Draining stops after this long even if reads never wait (a decoder slower than the stream).
DRAIN_BUDGET_S = 3.0
#: The delay floor is the smallest delay over this window of frames' read times.
WINDOW_S = 10.0
#: A delay further than this from the floor is a timestamp discontinuity, not a late frame.
JUMP_S = 5.0
#: Frame interval assumed until the stream says otherwise (CAP_PROP_FPS or PTS steps).
DEFAULT_INTERVAL_S = 1 / 25
#: CAP_PROP_FPS outside this range is not believed (RTSP streams may report 90000).
SANE_FPS = (1.0, 240.0)


class LiveClock:
    """One per live source. Per read: `stamp(...)` gives the frame's time or None to discard."""

    def __init__(self) -> None:
        self.interval_s = DEFAULT_INTERVAL_S
        self.drained = 0  # frames discarded since the last open
        self._draining = True
        self._drain_started: float | None = None
        self._last_end: float | None = None  # monotonic time the previous read returned
        self._last_pts_ms: float | None = None
        self._delays: deque[tuple[float, float]] = deque()  # (read time, delay), delay rising

    def opened(self, fps: float | None) -> None:
        """A fresh capture: drain what it buffered; believe its fps if it is sane."""
        if fps is not None and SANE_FPS[0] <= fps <= SANE_FPS[1]:
            self.interval_s = 1.0 / fps
        self.drained = 0
        self._draining = True
        self._drain_started = None
        self._last_end = None
        self._last_pts_ms = None
        self._delays.clear()

    @property
    def draining(self) -> bool:
        return self._draining

    def stamp(
        self, started: float, ended: float, wall: float, pts: float | None, pos_ms: float | None
    ) -> float | None:
        """The capture time of the frame a read returned, or None when it is to be discarded.

        `started`/`ended`: monotonic times around read(); `wall`: time.time() when it returned;
        `pts`: CAP_PROP_PTS (NO_PTS or None when the stream has none); `pos_ms`: POS_MSEC.
        """
        has_pts = pts is not None and pts != NO_PTS and pos_ms is not None and math.isfinite(pos_ms)
        step = self.interval_s
        if has_pts and self._last_pts_ms is not None and pos_ms is not None:
            pts_step_s = (pos_ms - self._last_pts_ms) / 1000
            if 0 < pts_step_s < 1 / SANE_FPS[0]:
                step = pts_step_s
                self.interval_s = 0.9 * self.interval_s + 0.1 * pts_step_s
        if self._last_end is not None and started - self._last_end > AWAY_INTERVALS * max(
            step, self.interval_s
        ):
            self._draining = True  # we were away: the backend kept receiving
            self._drain_started = None
        waited = ended - started >= BUFFERED_FRACTION * step
        first_read = self._last_end is None
        self._last_end = ended
        self._last_pts_ms = pos_ms if has_pts else None
        if self._draining:
            if self._drain_started is None:
                self._drain_started = ended
            if first_read or not waited:
                if ended - self._drain_started < DRAIN_BUDGET_S:
                    self.drained += 1
                    return None
            self._draining = False
        if not has_pts or pos_ms is None:
            return wall
        return self._from_pts(wall, pos_ms / 1000)

    def _from_pts(self, wall: float, pts_s: float) -> float:
        delay = wall - pts_s
        if self._delays and abs(delay - self._delays[0][1]) > JUMP_S:
            self._delays.clear()  # the camera restarted its clock, or ours was set
        while self._delays and self._delays[-1][1] >= delay:
            self._delays.pop()  # a monotonic deque: the front is the window's smallest delay
        self._delays.append((wall, delay))
        while self._delays[0][0] < wall - WINDOW_S:
            self._delays.popleft()
        return min(wall, pts_s + self._delays[0][1])
