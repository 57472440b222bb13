"""Per-track state for analytics stages: numpy columns with one row per tracker id, and labels
as small ints that survive a model swap. Zones and lines keep their state here so one frame's
tracks are updated with array operations, never a Python loop over detections, and so a year
of track ids cannot grow memory (``stale_rows``). Their times are read from a ``StageClock``,
which never goes backwards, so a row stamped before the capture time stepped back still
expires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

#: Tracks held at most; past it the longest unseen are forgotten first (a year of ids must not
#: grow memory even if a tracker never ends its tracks).
MAX_TRACKS = 10_000

Column = tuple[DTypeLike, tuple[int, ...], Any]


class StageClock:
    """Capture time that never goes backwards. ``now`` is the frame's capture time until the
    clock first steps back (a looped image folder, NTP correcting a camera); a step back, or
    a ``ts`` that is not a number, counts as no time passing, and later frames are read
    shifted by the steps back so far (``offset``). Expiry and dwell times are measured on it:
    on raw capture times a row stamped before a step back would be "seen in the future" and
    never expire.
    """

    __slots__ = ("last_ts", "now", "offset")

    def __init__(self) -> None:
        self.now = 0.0
        self.offset = 0.0  # now - ts: the sum of the steps back so far
        self.last_ts: float | None = None  # the latest finite capture time

    def advance(self, ts: float) -> float:
        """Move to a frame captured at ``ts``; returns the seconds that passed (0 or more)."""
        if not math.isfinite(ts):
            return 0.0
        last, self.last_ts = self.last_ts, ts
        if last is None:
            self.now = ts + self.offset
            return 0.0
        if ts < last:
            self.offset = self.now - ts  # this frame is at now: no time passed
            return 0.0
        before, self.now = self.now, max(self.now, ts + self.offset)
        return self.now - before

    def to_ts(self, t: float) -> float:
        """A reading of this clock as a capture time on the latest frame's timeline: the
        capture time itself while the clock never stepped back; after a step back, readings
        from before it move back with it, so ``ts - to_ts(t)`` is the time passed since ``t``."""
        return t - self.offset


class TrackTable:
    """Per-track state as numpy columns, one row per tracker id (kept sorted by id), so a stage
    updates a whole frame's tracks with array operations instead of a Python loop."""

    def __init__(self, columns: Mapping[str, Column]) -> None:
        self._spec = dict(columns)
        self.ids = np.zeros(0, np.int64)
        self.cols = {k: np.full((0, *shape), fill, dt) for k, (dt, shape, fill) in columns.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The row of each id, and a mask of the ids new here (rows added with fill values)."""
        pos = self.ids.searchsorted(ids)
        if len(self.ids):
            found = self.ids.take(pos, mode="clip") == ids
        else:
            found = np.zeros(len(ids), bool)
        if np.count_nonzero(found) < len(ids):
            grown = np.concatenate([self.ids, np.unique(ids[~found])])
            order = np.argsort(grown, kind="stable")
            added = len(grown) - len(self.ids)
            self.ids = grown[order]
            for key, (dtype, shape, fill) in self._spec.items():
                col = np.concatenate([self.cols[key], np.full((added, *shape), fill, dtype)])
                self.cols[key] = col[order]
            pos = self.ids.searchsorted(ids)
        return pos, ~found

    def drop(self, mask: np.ndarray) -> None:
        if not np.count_nonzero(mask):
            return
        keep = ~mask
        self.ids = self.ids[keep]
        self.cols = {key: col[keep] for key, col in self.cols.items()}

    def swap(self, i: int, j: int) -> None:
        """Exchange two rows' state (not their ids): the tracker gave each the other's object."""
        for col in self.cols.values():
            col[[i, j]] = col[[j, i]]


def stale_rows(last_seen: np.ndarray, now: float, keep_s: float) -> np.ndarray:
    """Rows last seen more than ``keep_s`` seconds before ``now`` (``StageClock`` readings),
    plus the longest unseen past MAX_TRACKS."""
    stale = now - last_seen > keep_s
    extra = len(last_seen) - np.count_nonzero(stale) - MAX_TRACKS
    if extra > 0:
        stale[np.argsort(last_seen, kind="stable")[: np.count_nonzero(stale) + extra]] = True
    return stale


def any_stale(last_seen: np.ndarray, now: float, keep_s: float) -> bool:
    """Whether ``stale_rows`` would find a row, by one reduction rather than a mask (most
    frames find none). ``fmin`` skips NaN times, which ``stale_rows`` never finds stale."""
    if len(last_seen) > MAX_TRACKS:
        return True
    return len(last_seen) > 0 and bool(now - np.fmin.reduce(last_seen) > keep_s)


class LabelIndex:
    """Labels as small ints for arrays, kept across model swaps (a swap may bring new ones)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._labels: list[str] | None = None
        self.of_class = np.zeros(0, np.int32)

    def update(self, labels: list[str]) -> bool:
        """Map this frame's class ids to label indices; True when the labels changed."""
        if labels == self._labels:
            return False
        self._labels = list(labels)
        self.of_class = np.array([self.add(name) for name in labels], np.int32)
        return True

    def add(self, name: str) -> int:
        if name not in self._index:
            self._index[name] = len(self.names)
            self.names.append(name)
        return self._index[name]
