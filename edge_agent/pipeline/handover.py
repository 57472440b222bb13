"""The hand-over from the sources' capture threads to the one inference thread.

Each source has a one-slot mailbox. Live sources ``offer``: a frame not yet taken is replaced by
the newer one (a camera that outruns the model must not build a backlog of stale frames). Files
and folders ``put``: the capture thread waits until inference has taken the frame, so the next
one is read and pre-processed while inference runs, and never more than one ahead (a frame and
its tensor: 2 MB for 512x512 into 320x320, 7 MB from 1080p). The inference thread ``take``s
round-robin, starting after the source it served last, so with several sources on one model
each gets its fair share whatever its frame rate. After ``close`` a source's pending frame is
still delivered, then its end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

#: Poll interval of blocking hand-overs, so stop() is noticed promptly.
POLL_S = 0.2

#: What ``take`` returns for a source that has ended.
END = None


class Handover:
    def __init__(self, source_ids: Sequence[str]) -> None:
        self._cond = threading.Condition()
        self._order = list(source_ids)
        self._items: dict[str, Any] = {}
        self._closed: set[str] = set()
        self._next = 0  # where the next round-robin scan starts

    def offer(self, source_id: str, item: Any) -> Any:
        """Leave ``item`` for inference; return the untaken frame it replaced, or None."""
        with self._cond:
            replaced = self._items.get(source_id)
            self._items[source_id] = item
            self._cond.notify_all()
            return replaced

    def offer_if_empty(self, source_id: str, item: Any) -> bool:
        """Leave ``item`` only if no frame is waiting: a frame the motion gate let through must
        not be replaced by a later one the gate skipped. False when it was not left."""
        with self._cond:
            if self._items.get(source_id) is not None:
                return False
            self._items[source_id] = item
            self._cond.notify_all()
            return True

    def put(self, source_id: str, item: Any, stop: threading.Event) -> bool:
        """Leave ``item`` and wait until inference takes it; False if ``stop`` came first.
        One producer per source: its slot is always empty when ``put`` starts."""
        with self._cond:
            self._items[source_id] = item
            self._cond.notify_all()
            while self._items.get(source_id) is item and not stop.is_set():
                self._cond.wait(POLL_S)
            return not stop.is_set()

    def close(self, source_id: str) -> None:
        """The source has ended: its pending frame, if any, is still delivered, then END."""
        with self._cond:
            self._closed.add(source_id)
            self._cond.notify_all()

    def take(self, timeout_s: float) -> tuple[str, Any] | None:
        """The next ``(source_id, frame)`` round-robin, ``(source_id, END)`` once per ended
        source, or None when nothing arrived within ``timeout_s``."""
        with self._cond:
            got = self._next_item()
            if got is None:
                self._cond.wait(timeout_s)
                got = self._next_item()
            return got

    def _next_item(self) -> tuple[str, Any] | None:
        n = len(self._order)
        for step in range(n):
            i = (self._next + step) % n
            source_id = self._order[i]
            item = self._items.pop(source_id, None)
            if item is not None:
                self._next = (i + 1) % n
                self._cond.notify_all()  # a put() waits for its frame to be taken
                return source_id, item
            if source_id in self._closed:
                self._order.pop(i)
                self._next = i % max(1, n - 1)
                return source_id, END
        return None

    @property
    def open_sources(self) -> int:
        """Sources that have not delivered their END yet."""
        with self._cond:
            return len(self._order)
