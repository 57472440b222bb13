"""Bounded opens and reads for cv2.VideoCapture: no call makes the caller wait past its deadline.

Two layers (docs/capture-guard.md). FFmpeg's own interrupt callback, armed per capture with
CAP_PROP_OPEN_TIMEOUT_MSEC / CAP_PROP_READ_TIMEOUT_MSEC (honoured by OpenCV 5.0's FFMPEG backend
here, for http and rtsp alike), ends most stalls inside the backend a little before our deadline.
The backstop: every call runs in a worker thread that owns the capture object. When a deadline
passes anyway, the caller gets CaptureTimeout at once and the worker is *abandoned*: it releases
its capture itself if and when the backend returns (releasing it from another thread while the
worker is inside it would be a use-after-free in the backend). Abandoned workers still stuck are
counted and capped, so a camera that wedges every time cannot pile up threads. The worker
thread and the process-wide count of stuck ones live in capture_worker.py.

Each call collects the FFmpeg lines its worker logs (edge_agent.ffmpeg_log, installed at the
first open); a failure carries them translated to short words in `reason`
(edge_agent.capture_reason).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import cv2
import numpy as np

from edge_agent import ffmpeg_log
from edge_agent.capture_reason import Call, reason
from edge_agent.capture_worker import Worker, add_stuck, discard_stuck, get_prop, read_frame, settle
from edge_agent.capture_worker import release as _release
from edge_agent.capture_worker import wait_for_stuck as wait_for_stuck

log = logging.getLogger(__name__)

#: Issue 18: no capture call blocks longer than this by default, opens included.
DEFAULT_TIMEOUT_S = 5.0
#: The backend's own timeout is armed this much shorter than ours, so FFmpeg normally gives up
#: first and the worker survives; the thread backstop only fires when FFmpeg does not honour it.
BACKEND_MARGIN_S = 0.5
BACKEND_MARGIN_FRACTION = 0.2  # of a short timeout, so 1 s still leaves FFmpeg 0.8 s
#: Wedged workers a GuardedCapture tolerates before open() refuses to start another.
DEFAULT_MAX_STUCK = 2
#: close() waits at most this long for the worker to release the capture, then abandons it.
DEFAULT_CLOSE_TIMEOUT_S = 1.0

#: FFmpeg lines (at VERBOSE, ffmpeg_log's level) saying a running stream changed its picture:
#: H.264/HEVC decoders "Reinit context to 640x480, ...", and the scaler OpenCV builds again
#: when the decoded size changes (MJPEG: "[swscaler @ 0x..] deprecated pixel format used").
_REINIT = re.compile(r"Reinit context to \d+x\d+|^\[swscaler @ ")
T = TypeVar("T")


class CaptureError(RuntimeError):
    """An open or read that failed; the message says what, of which target, after how long.

    `reason`: why, in short words for users and MQTT state ("not found (RTSP 404)",
    "connection refused"; edge_agent.capture_reason), None where no backend call failed."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class CaptureTimeout(CaptureError):
    """A call that passed its deadline; `waited_for` names the call, `timeout_s` the deadline."""

    def __init__(
        self, message: str, waited_for: str, timeout_s: float, reason: str | None = None
    ) -> None:
        super().__init__(message, reason)
        self.waited_for = waited_for
        self.timeout_s = timeout_s


def backend_timeout_ms(timeout_s: float) -> int:
    """The FFmpeg timeout (ms) armed under a guard deadline of timeout_s."""
    margin = min(BACKEND_MARGIN_S, BACKEND_MARGIN_FRACTION * timeout_s)
    return max(1, round((timeout_s - margin) * 1000))


class GuardedCapture:
    """A VideoCapture whose open(), read(), get() and close() return within their deadlines.

    Any failure raises CaptureError (CaptureTimeout for a deadline) and leaves it closed:
    call open() again, which builds a fresh capture object. close() may come from another
    thread; a read() waiting meanwhile raises CaptureError("closed") at once.
    """

    def __init__(
        self,
        target: str | int,
        *,
        api: int = cv2.CAP_FFMPEG,
        params: Sequence[int] = (),
        open_timeout_s: float = DEFAULT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_TIMEOUT_S,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        backend_timeouts: bool = True,
        max_stuck: int = DEFAULT_MAX_STUCK,
        label: str | None = None,
    ) -> None:
        if min(open_timeout_s, read_timeout_s, close_timeout_s) <= 0 or max_stuck < 1:
            raise ValueError(
                "timeouts must be > 0 s and max_stuck >= 1, but got "
                f"open {open_timeout_s}, read {read_timeout_s}, close {close_timeout_s}, "
                f"max_stuck {max_stuck}"
            )
        self.target = target
        self.label = label or str(target)  # what errors and thread names show: pass it redacted
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.close_timeout_s = close_timeout_s
        self.max_stuck = max_stuck
        self.abandoned_total = 0  # workers ever abandoned (a metric for the lead's stats)
        self._params = list(params)
        if backend_timeouts:  # only CAP_FFMPEG honours these; other backends ignore them
            self._params += [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, backend_timeout_ms(open_timeout_s),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, backend_timeout_ms(read_timeout_s),
            ]  # fmt: skip
        #: A failure this late was FFmpeg's interrupt callback firing: a timeout, not a refusal.
        self._backend_gave_up_s = {
            "open": 0.9 * backend_timeout_ms(open_timeout_s) / 1000 if backend_timeouts else None,
            "read": 0.9 * backend_timeout_ms(read_timeout_s) / 1000 if backend_timeouts else None,
            "get": None,
        }
        self._api = api
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._inflight: Future[Any] | None = None
        self._stuck: set[Worker] = set()
        self._spawned = 0
        self._frames = 0  # read since the last open: a read failing at 0 points at the codec
        #: The backend's last line in the last failed call (None if it said nothing), for DEBUG.
        self.last_backend_line: str | None = None
        #: Set when a read's FFmpeg lines say the decoder or scaler was set up again mid-stream
        #: (a new frame size): OpenCV keeps scaling into the size it opened with, so the caller
        #: reopens to see the true size (docs/sources.md). Cleared by open().
        self.reinit_line: str | None = None
        #: (CAP_PROP_PTS, CAP_PROP_POS_MSEC) of the frame read() returned last.
        self.last_times: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def stuck_workers(self) -> int:
        """Abandoned workers whose backend call has not returned yet."""
        with self._lock:
            return len(self._stuck)

    @property
    def is_open(self) -> bool:
        return self._worker is not None

    def open(self) -> None:
        """Open a fresh capture object; CaptureError if the backend says no, CaptureTimeout if
        it has not answered within open_timeout_s."""
        self.close()
        with self._lock:
            if len(self._stuck) >= self.max_stuck:
                raise CaptureError(
                    f"{self.label}: {len(self._stuck)} earlier capture objects are still stuck "
                    f"in the backend (limit {self.max_stuck}); not opening another until one "
                    "returns"
                )
            self._spawned += 1
            worker = Worker(f"capture-{self.label[:24]}-{self._spawned}", self._exited)
            self._worker = worker
        worker.thread.start()
        self._frames = 0
        self.reinit_line = None
        # Reasons need FFmpeg's lines. keep_stderr: a process that did not call
        # backend_logs.quiet_backends() still sees on stderr what FFmpeg printed there before.
        ffmpeg_log.install(keep_stderr=True)

        def do_open(w: Worker) -> bool:
            w.cap = cv2.VideoCapture(self.target, self._api, self._params)
            return bool(w.cap.isOpened())

        start, lines = time.monotonic(), list[str]()
        if not self._call(worker, do_open, self.open_timeout_s, "open", lines):
            self._retire(worker)
            took = time.monotonic() - start
            raise self._failure("open", took, "the backend could not open it", lines)

    def read(self) -> np.ndarray:
        """The next frame; CaptureError when the stream ends or fails, CaptureTimeout when no
        frame came within read_timeout_s. Either way the capture is closed afterwards."""
        worker = self._current()
        start, lines = time.monotonic(), list[str]()
        ok, image, pts, pos_ms = self._call(worker, read_frame, self.read_timeout_s, "read", lines)
        if not ok or image is None:
            self._retire(worker)
            raise self._failure("read", time.monotonic() - start, "no frame", lines)
        self._frames += 1
        self.last_times = (pts, pos_ms)
        if self._frames > 1:
            self.reinit_line = next((ln for ln in lines if _REINIT.search(ln)), self.reinit_line)
        return image

    def get(self, prop_id: int) -> float:
        """cap.get(prop_id) under the read deadline (POS_MSEC, FPS, FRAME_WIDTH, ...)."""
        worker = self._current()
        return float(self._call(worker, lambda w: get_prop(w, prop_id), self.read_timeout_s, "get"))

    def close(self) -> None:
        """Release the capture within close_timeout_s; a worker stuck in the backend is
        abandoned instead (it releases when it returns). Safe from any thread, and twice."""
        with self._lock:
            worker, self._worker = self._worker, None
            inflight, self._inflight = self._inflight, None
        if worker is None:
            return
        if inflight is not None:  # another thread waits on the backend: free it now
            settle(inflight, exc=CaptureError(f"{self.label}: closed while waiting"))
        if worker.busy:
            self._abandon(worker)
            return
        fut = worker.submit(_release)
        worker.abandon()  # exit after the release
        try:
            fut.result(self.close_timeout_s)
        except FutureTimeout:
            self._abandon(worker, already=True)

    release = close  # cv2.VideoCapture's name: sources.py's _release() works unchanged

    def __enter__(self) -> GuardedCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _current(self) -> Worker:
        worker = self._worker
        if worker is None:
            raise CaptureError(
                f"{self.label}: not open (open() it first, or again after a failure)"
            )
        return worker

    def _call(
        self,
        worker: Worker,
        fn: Callable[[Worker], T],
        timeout_s: float,
        what: Call,
        lines: list[str] | None = None,
    ) -> T:
        """fn(worker) in the worker under timeout_s; the FFmpeg lines it logs go to `lines`."""
        lines = [] if lines is None else lines

        def collecting(w: Worker) -> T:
            with ffmpeg_log.collect(lines):
                return fn(w)

        with self._lock:  # close() from another thread either sees this call or refuses it
            if self._worker is not worker:
                raise CaptureError(f"{self.label}: closed while waiting")
            fut = self._inflight = worker.submit(collecting)
        try:
            return fut.result(timeout_s)
        except FutureTimeout:
            self._abandon(worker)
            why = self._reason(what, list(lines), timed_out=True, timeout_s=timeout_s)
            raise CaptureTimeout(
                f"{self.label}: {what} timed out: no answer from the backend within "
                f"{timeout_s:g} s (capture abandoned; open() makes a fresh one)",
                what,
                timeout_s,
                why,
            ) from None
        finally:
            with self._lock:
                if self._inflight is fut:
                    self._inflight = None

    def _failure(self, what: Call, took_s: float, problem: str, lines: list[str]) -> CaptureError:
        """CaptureTimeout when FFmpeg's own timeout ended the call, else CaptureError; either
        with the reason in words, also at the end of the message."""
        gave_up = self._backend_gave_up_s[what]
        limit = self.open_timeout_s if what == "open" else self.read_timeout_s
        timed_out = gave_up is not None and took_s >= gave_up
        why = self._reason(what, lines, timed_out=timed_out, timeout_s=limit)
        if timed_out:
            return CaptureTimeout(
                f"{self.label}: {what} timed out inside the backend after {took_s:.1f} s: {why}",
                what,
                limit,
                why,
            )
        return CaptureError(f"{self.label}: {problem} ({took_s:.1f} s): {why}", why)

    def _reason(self, what: Call, lines: list[str], *, timed_out: bool, timeout_s: float) -> str:
        """The words for a failure, keeping the backend's own last line for DEBUG."""
        opened = what != "open"
        why = reason(
            lines, timed_out=timed_out, opened=opened, kind=what, frames=self._frames,
            timeout_s=timeout_s,
        )  # fmt: skip
        self.last_backend_line = lines[-1] if lines else None
        if lines:
            log.debug("%s: %s failed: %s (backend: %s)", self.label, what, why, lines[-1])
        return why

    def _retire(self, worker: Worker) -> None:
        """A failed call: release in the worker (it is idle) and forget it."""
        with self._lock:
            if self._worker is worker:
                self._worker = None
        worker.submit(_release)
        worker.abandon()

    def _abandon(self, worker: Worker, already: bool = False) -> None:
        with self._lock:
            if self._worker is worker:
                self._worker = None
            if not worker.exited:
                self._stuck.add(worker)
                self.abandoned_total += 1
                add_stuck(worker)
        if not already:
            worker.abandon()
        log.debug("%s: abandoned capture worker %s", self.label, worker.thread.name)

    def _exited(self, worker: Worker) -> None:
        with self._lock:
            worker.exited = True
            discard_stuck(worker)
            if worker in self._stuck:
                self._stuck.discard(worker)
                log.debug("%s: stuck worker %s returned", self.label, worker.thread.name)
