"""The thread that owns one cv2.VideoCapture, and the process-wide count of stuck ones.

Split out of capture_guard.py so the guard reads as deadlines and failures only. A backend call
can outlive its caller's deadline; the worker that made it is then abandoned and keeps the
capture until the backend returns, because releasing it from another thread while the worker is
inside it would be a use-after-free in the backend (docs/capture-guard.md). Such workers belong
to the process, not to one guard: wait_for_stuck() lets shutdown wait for them.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypeVar

import cv2
import numpy as np

T = TypeVar("T")
#: Abandoned workers still inside the backend, over every GuardedCapture: threads are the
#: process's, and so is the exit problem they pose (wait_for_stuck).
_all_stuck: set[Worker] = set()
_all_stuck_lock = threading.Condition()
#: Every worker thread not yet ended (stuck or not): a retired worker may still be releasing its
#: capture inside OpenCV when the main thread returns, and the interpreter must not finalise
#: under it (the abort above); the atexit hook below waits for them.
_alive: set[Worker] = set()
#: How long an exiting interpreter waits for capture workers to end (they release in ms; one
#: still inside a wedged backend is the CLI's job: it leaves with os._exit).
EXIT_WAIT_S = 2.0
_Job = tuple[Callable[["Worker"], Any], "Future[Any]"]


def wait_for_stuck(timeout_s: float) -> int:
    """Wait up to timeout_s for stuck workers to return; how many are still stuck.

    Call it at shutdown. Measured: a worker that comes back from FFmpeg while the interpreter
    finalises is ended by a forced unwind through OpenCV's C++ frames, and the process aborts
    ("terminate called without an active exception", exit status 134). So if this returns
    more than 0, flush logs (logging.shutdown()) and leave with os._exit(status).
    """
    deadline = time.monotonic() + timeout_s
    with _all_stuck_lock:
        while _all_stuck and (left := deadline - time.monotonic()) > 0:
            _all_stuck_lock.wait(left)
        return len(_all_stuck)


def _wait_at_exit() -> None:
    """atexit: let workers that are ending (releasing their capture) end first."""
    deadline = time.monotonic() + EXIT_WAIT_S
    with _all_stuck_lock:
        while _alive and (left := deadline - time.monotonic()) > 0:
            _all_stuck_lock.wait(left)


atexit.register(_wait_at_exit)


def add_stuck(worker: Worker) -> None:
    """Count an abandoned worker still inside the backend (wait_for_stuck waits for it)."""
    with _all_stuck_lock:
        _all_stuck.add(worker)


def discard_stuck(worker: Worker) -> None:
    """A worker has exited: stop counting it and wake wait_for_stuck."""
    with _all_stuck_lock:
        _all_stuck.discard(worker)
        _all_stuck_lock.notify_all()


def settle(fut: Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Finish fut unless close() already failed it (the caller has gone)."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


class Worker:
    """One thread owning one capture object; it alone calls into it, release included."""

    def __init__(self, name: str, on_exit: Callable[[Worker], None]) -> None:
        self.cap: cv2.VideoCapture | None = None
        self.abandoned = False
        self.busy = False
        self.exited = False  # set under the guard's lock by its on_exit
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        with _all_stuck_lock:
            _alive.add(self)

    def submit(self, fn: Callable[[Worker], T]) -> Future[T]:
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    def abandon(self) -> None:
        """Let the thread go: it releases the capture and exits once the backend returns."""
        self.abandoned = True
        self._jobs.put(None)

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                fn, fut = job
                try:
                    if not fut.set_running_or_notify_cancel():
                        continue
                except RuntimeError:  # close() failed it before it ran: its caller has gone
                    continue
                self.busy = True
                try:
                    settle(fut, fn(self))
                except BaseException as exc:  # handed to the caller, who raises it
                    settle(fut, exc=exc)
                finally:
                    self.busy = False
                if self.abandoned:
                    break
        finally:
            if self.cap is not None:
                self.cap.release()
                self.cap = None
            self._on_exit(self)
            with _all_stuck_lock:
                _alive.discard(self)
                _all_stuck_lock.notify_all()


def read_frame(w: Worker) -> tuple[bool, np.ndarray | None, float, float]:
    """cap.read() in the worker, with the frame's CAP_PROP_PTS and CAP_PROP_POS_MSEC read in
    the same job: a live source needs them for every frame, and two more round trips to the
    worker per frame would cost more than the reads themselves."""
    assert w.cap is not None
    ok, image = w.cap.read()
    return (
        bool(ok),
        image,
        float(w.cap.get(cv2.CAP_PROP_PTS)),
        float(w.cap.get(cv2.CAP_PROP_POS_MSEC)),
    )


def get_prop(w: Worker, prop_id: int) -> float:
    """cap.get(prop_id) in the worker."""
    assert w.cap is not None
    return float(w.cap.get(prop_id))


def release(w: Worker) -> None:
    """cap.release() in the worker; nothing if it holds no capture."""
    if w.cap is not None:
        w.cap.release()
        w.cap = None
