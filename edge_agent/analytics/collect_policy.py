"""Which frames the ``collect`` stage keeps, and the rate cap; no I/O here.

A frame is worth a labeller's time when the model hesitates on it (a score in the band), when
it contradicts itself (a track whose label changed since the frame before) or, at random, to
keep the set from holding only hard cases. The rate cap then limits how many are kept per hour
and how close together, in capture time.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from edge_agent.analytics.collect_options import CollectOptions
from edge_agent.types import UNCONFIRMED, Classifications, Detections, Result

#: Why a frame was kept; the image record's ``reasons`` lists them in this order.
REASONS = ("band", "disagreement", "sample")
HOUR_S = 3600.0
#: Tracks whose last label is remembered; past it the longest unseen are forgotten, so a
#: detector spewing boxes cannot grow the table without bound.
MAX_REMEMBERED_TRACKS = 1024


def top_scores(predictions: Detections | Classifications) -> np.ndarray:
    """The scores the band looks at: every box's, or a classifier's top score."""
    if isinstance(predictions, Detections):
        return predictions.confidence
    scores = predictions.scores
    return scores[np.argmax(scores)][np.newaxis] if len(scores) else scores


class Disagreements:
    """Each track's label in the last frame it was seen; a change is a disagreement."""

    def __init__(self) -> None:
        self._last: dict[int, str] = {}  # insertion order: least recently seen first

    def update(self, det: Detections, labels: list[str]) -> bool:
        if det.tracker_id is None:
            return False
        changed = False
        for track, cls in zip(det.tracker_id.tolist(), det.class_id.tolist(), strict=True):
            if track == UNCONFIRMED:
                continue
            # Label names, not indices: a swapped model whose label order differs is no
            # disagreement.
            label = labels[cls] if 0 <= cls < len(labels) else f"#{cls}"
            before = self._last.pop(track, None)
            changed |= before is not None and before != label
            self._last[track] = label
        while len(self._last) > MAX_REMEMBERED_TRACKS:
            del self._last[next(iter(self._last))]
        return changed


class RateCap:
    """At most ``max_per_hour`` kept in any hour, ``min_interval_s`` apart (capture time)."""

    def __init__(self, max_per_hour: int, min_interval_s: float) -> None:
        self.max_per_hour = max_per_hour
        self.min_interval_s = min_interval_s
        self._kept: deque[float] = deque()

    def prime(self, times: list[float]) -> None:
        """Frames kept before a restart still count against the cap."""
        for ts in sorted(times):
            self.kept(ts)

    def allows(self, ts: float) -> bool:
        if self._kept and ts < self._kept[-1]:
            self._kept.clear()  # time went backwards (a folder read again): a new timeline
        while self._kept and self._kept[0] <= ts - HOUR_S:
            self._kept.popleft()
        if self._kept and ts - self._kept[-1] < self.min_interval_s:
            return False
        return len(self._kept) < self.max_per_hour

    def kept(self, ts: float) -> None:
        self._kept.append(ts)
        while len(self._kept) > self.max_per_hour:
            self._kept.popleft()


class Policy:
    """The reasons to keep a frame, from the options; one per source."""

    def __init__(self, options: CollectOptions, seed: int) -> None:
        self.band = options.score_band
        self.sample_rate = options.sample_rate
        self.rng = random.Random(seed)
        self.disagreements = Disagreements() if options.disagreement else None

    def reasons(self, result: Result) -> list[str]:
        """Why this frame should be kept (empty: it should not). Every frame goes through
        here, so the disagreement table and the random draw see them all."""
        predictions = result.predictions
        found: list[str] = []
        if self.band is not None:
            scores = top_scores(predictions)
            low, high = self.band
            if np.any((scores >= low) & (scores <= high)):
                found.append("band")
        if self.disagreements is not None and isinstance(predictions, Detections):
            if self.disagreements.update(predictions, result.labels):
                found.append("disagreement")
        # Drawn for every frame, so which frames are sampled does not depend on the others.
        if self.sample_rate > 0 and self.rng.random() < self.sample_rate:
            found.append("sample")
        return found
