"""The one-slot hand-over between a source's capture thread and its inference thread."""

from __future__ import annotations

import threading
from typing import Any

#: Poll interval of blocking hand-overs, so stop() is noticed promptly.
POLL_S = 0.2


class Mailbox:
    """The one-slot hand-over from capture to inference.

    Live sources ``offer``: a frame not yet taken is replaced by the newer one (and the
    caller counts a drop). Files and folders ``put``: it waits until inference has taken the
    frame, so the next one is read and pre-processed while inference runs, and never more
    than one ahead (a frame and its tensor: 2 MB for 512x512 into 320x320, 7 MB from 1080p). After
    ``close`` the pending frame is still delivered, then the end (None).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def offer(self, item: Any) -> bool:
        """Leave ``item`` for inference; True if it replaced a frame that was not taken."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify_all()
            return replaced

    def put(self, item: Any, stop: threading.Event) -> bool:
        """Leave ``item`` and wait until inference takes it; False if ``stop`` came first.
        One producer per mailbox: the slot is always empty when ``put`` starts."""
        with self._cond:
            self._item = item
            self._cond.notify_all()
            while self._item is item and not stop.is_set():
                self._cond.wait(POLL_S)
            return not stop.is_set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout_s: float) -> tuple[bool, Any]:
        """(True, frame), (True, None) at the end, or (False, None) on timeout."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()  # a put() waits for its frame to be taken
            if item is not None or self._closed:
                return True, item
            return False, None
