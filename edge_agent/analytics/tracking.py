"""The ``track`` stage: one multi-object tracker per source, so counters downstream count
objects, not boxes.

ByteTrack's association (Zhang et al., 2022, https://arxiv.org/abs/2110.06864): every frame,
confirmed tracks take the confident boxes first (IoU, optimal assignment), then the confirmed
tracks still unmatched take low-confidence boxes (an occluded or blurred object's score dips
before it comes back), then unconfirmed tracks take what confident boxes remain. A confident
box nobody takes starts an unconfirmed track; ``birth_hits`` matches confirm it and give it an
id. What we do differently, and why (docs/tracking.md):

- **Time is seconds from the frames' capture times**, never frame counts: a track is kept
  ``lost_s`` seconds unseen and the motion model steps in seconds (``motion.py``), so 5 fps,
  30 fps and dropped frames keep the same lifetimes (roboflow trackers scaled a frame buffer
  by frame rate, their PR #420).
- **Ids are given at confirmation**, are positive, increase without gaps, and are never
  reused, even across restarts (blocks reserved in the source's state folder): a box no
  confirmed track holds is ``UNCONFIRMED`` and no stage counts it (supervision's LineZone
  counted every -1 box as one shared object).
- **Class keys are label names**, so a swapped model whose label order differs keeps tracks.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edge_agent.analytics import motion
from edge_agent.analytics.association import match_stage
from edge_agent.analytics.track_ids import ID_FILE, TrackIds
from edge_agent.analytics.trackstate import StageClock
from edge_agent.geometry import box_iou
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.types import UNCONFIRMED, Detections, Frame, Result

#: Minimum IoU for a low-confidence box to extend a track (ByteTrack's second association,
#: match_thresh 0.5): stricter than the first stage, because low scores include clutter.
LOW_MATCH_IOU = 0.5
#: Most tracks kept per source; past it the longest-unseen are dropped first, so a detector
#: spewing boxes cannot grow the IoU matrix (and the Pi's frame time) without bound.
MAX_TRACKS = 512
#: Slack when comparing times (s): float sums of frame intervals must not expire a track a
#: rounding error early.
TIME_EPS_S = 1e-9


class TrackOptions(BaseModel):
    """Follow each object from frame to frame and give it an id (ByteTrack-style, on IoU);
    zones, lines and events count confirmed tracks only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Confidence a box needs to match a track in the first stage and to start "
        "a new track.",
    )
    low_threshold: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Confidence a box needs to extend an existing confirmed track in the "
        "second stage (below high_threshold). Boxes under the model's score_threshold never "
        "reach the tracker: lower model.score_threshold to feed this stage.",
    )
    match_iou: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Minimum IoU between a track's predicted box and a confident box to match.",
    )
    birth_hits: int = Field(
        3,
        ge=1,
        le=100,
        description="Frames in a row a new track must be matched before it is confirmed and "
        "gets an id; 1 confirms at once.",
    )
    lost_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Seconds (capture time) a confirmed track is kept unseen before it is "
        "deleted; an object back within it keeps its id.",
    )
    class_consistent: bool = Field(
        True,
        description="A track only matches boxes of its own label; false lets a box whose label "
        "flickers (car/truck) keep its track.",
    )

    @field_validator("low_threshold")
    @classmethod
    def _low_below_high(cls, value: float, info: ValidationInfo) -> float:
        high = info.data.get("high_threshold")
        if high is not None and value > high:
            raise ValueError(f"must be at most high_threshold ({high}), but got {value}")
        return value


class _Tracks:
    """Every live track as parallel arrays (one row per track), kept by mask."""

    def __init__(self) -> None:
        self.state = motion.empty_state()
        self.ids = np.zeros(0, np.int64)  # 0 while unconfirmed
        self.hits = np.zeros(0, np.int64)  # matches, counted while any track is unconfirmed
        self.last_seen = np.zeros(0)  # tracker clock, s
        self.keys = np.zeros(0, np.int64)  # class keys (label names, interned)
        self.active = np.zeros(0, bool)  # matched in the previous frame

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, mask: np.ndarray) -> None:
        self.state, self.ids, self.hits = self.state[:, mask], self.ids[mask], self.hits[mask]
        self.last_seen, self.keys, self.active = (
            self.last_seen[mask],
            self.keys[mask],
            self.active[mask],
        )

    def add(self, xyxy: np.ndarray, keys: np.ndarray, clock: float) -> None:
        n = len(xyxy)
        self.state = np.concatenate([self.state, motion.initial_state(xyxy)], axis=1)
        self.ids = np.concatenate([self.ids, np.zeros(n, np.int64)])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.last_seen = np.concatenate([self.last_seen, np.full(n, clock)])
        self.keys = np.concatenate([self.keys, keys])
        self.active = np.concatenate([self.active, np.ones(n, bool)])


class Tracker:
    """The tracker of one source, free of the pipeline: ``update`` takes one frame's boxes
    and its capture time and returns each box's track id (UNCONFIRMED when no confirmed track
    holds it)."""

    def __init__(self, options: TrackOptions, ids: TrackIds | None = None) -> None:
        self.options = options
        self._ids = ids if ids is not None else TrackIds()
        self._tracks = _Tracks()
        self._clock = StageClock()  # capture time that never goes backwards
        self.ids_given = 0  # tracks confirmed so far

    def _associate(
        self,
        xyxy: np.ndarray,
        confidence: np.ndarray,
        keys: np.ndarray,
        high: np.ndarray,
        confirmed: np.ndarray,
        det_track: np.ndarray,
    ) -> None:
        """ByteTrack's cascade on one IoU matrix (predicted track boxes x detections). A stage
        with no tracks or no boxes to match is skipped before its masks are made."""
        opt, tracks = self.options, self._tracks
        iou = box_iou(motion.boxes(tracks.state), xyxy)
        if opt.class_consistent and _mixed(tracks.keys, keys):
            iou[tracks.keys[:, np.newaxis] != keys[np.newaxis, :]] = 0.0
        n_high = np.count_nonzero(high)
        # 1. confirmed tracks (seen or lost) x confident boxes
        match_stage(iou, confirmed.nonzero()[0], high.nonzero()[0], opt.match_iou, det_track)
        # 2. confirmed tracks seen last frame and still free x low-confidence boxes
        if n_high < len(high):
            low = (~high & (confidence >= opt.low_threshold)).nonzero()[0]
            if len(low):
                free = confirmed & tracks.active
                free[det_track[det_track >= 0]] = False
                match_stage(iou, free.nonzero()[0], low, LOW_MATCH_IOU, det_track)
        # 3. unconfirmed tracks x confident boxes nobody took
        if np.count_nonzero(confirmed) < len(confirmed):
            left = (high & (det_track < 0)).nonzero()[0]
            match_stage(iou, (~confirmed).nonzero()[0], left, opt.match_iou, det_track)

    def live_ids(self) -> np.ndarray:
        """Ids of the confirmed tracks kept now, seen in this frame or lost for under lost_s."""
        return self._tracks.ids[self._tracks.ids > 0]

    def live_count(self) -> int:
        """How many ``live_ids`` there are."""
        return int(np.count_nonzero(self._tracks.ids > 0))

    def update(
        self, xyxy: np.ndarray, confidence: np.ndarray, keys: np.ndarray, ts: float
    ) -> np.ndarray:
        """Match one frame's boxes to tracks; ``keys`` are class keys (equal keys may match
        when ``class_consistent``). A ``ts`` earlier than the last frame's counts as no time
        passing (a clock stepped back), so nothing crashes and no track expires early; so does
        a ``ts`` that is not a number. A box with a coordinate or score that is not a number
        is nobody's (UNCONFIRMED) and starts nothing, rather than poisoning the matching."""
        opt, tracks = self.options, self._tracks
        dt = self._clock.advance(ts)
        now = self._clock.now
        if len(tracks):
            if now - tracks.last_seen.min() > opt.lost_s + TIME_EPS_S:
                tracks.keep(now - tracks.last_seen <= opt.lost_s + TIME_EPS_S)
            motion.predict(tracks.state, dt)

        n = len(xyxy)
        xyxy = np.asarray(xyxy, np.float64)  # once, not in each use below
        det_track = np.empty(n, np.intp)
        det_track.fill(-1)
        high = confidence >= opt.high_threshold
        if np.count_nonzero(np.isfinite(xyxy)) < xyxy.size:
            finite = np.isfinite(xyxy).all(axis=1)
            xyxy, high = np.where(finite[:, np.newaxis], xyxy, 0.0), high & finite
            confidence = np.where(finite, confidence, 0.0)
        confirmed = tracks.ids > 0
        waiting = np.count_nonzero(confirmed) < len(tracks)  # unconfirmed tracks
        if len(tracks) and n:
            self._associate(xyxy, confidence, keys, high, confirmed, det_track)

        matched = (det_track >= 0).nonzero()[0]
        rows = det_track[matched]
        motion.correct(tracks.state, rows, xyxy[matched])
        if waiting:
            tracks.hits[rows] += 1
        tracks.last_seen[rows] = now
        if not opt.class_consistent:
            tracks.keys[rows] = keys[matched]
        tracks.active[:] = False
        tracks.active[rows] = True
        # An unconfirmed track must be matched in every frame until it is confirmed
        # (ByteTrack): clutter rarely repeats in the same place, an object does.
        if waiting:
            keep = confirmed | tracks.active
            if np.count_nonzero(keep) < len(keep):
                det_track[matched] = (np.cumsum(keep) - 1)[rows]
                tracks.keep(keep)

        born = (high & (det_track < 0)).nonzero()[0] if len(matched) < n else matched[:0]
        if len(born):
            det_track[born] = np.arange(len(tracks), len(tracks) + len(born))
            tracks.add(xyxy[born], keys[born], now)
        if waiting or len(born):
            ripe = ((tracks.ids == 0) & (tracks.hits >= opt.birth_hits)).nonzero()[0]
            if len(ripe):
                tracks.ids[ripe] = self._ids.take(len(ripe))
                self.ids_given += len(ripe)

        if len(tracks) == 0:
            return np.full(n, UNCONFIRMED, np.int64)
        out = tracks.ids[det_track]  # det_track -1 picks the last row: overwritten below
        if len(matched) < n or waiting or len(born):  # else every box has a confirmed track
            out[(det_track < 0) | (out == 0)] = UNCONFIRMED
        if len(tracks) > MAX_TRACKS:  # keep the most recently seen
            newest = np.argsort(-tracks.last_seen, kind="stable")[:MAX_TRACKS]
            mask = np.zeros(len(tracks), bool)
            mask[newest] = True
            tracks.keep(mask)
        return out


def _with_ids(det: Detections, ids: np.ndarray) -> Detections:
    """``det`` with ``tracker_id`` set to ``ids``, holding the same arrays otherwise: a shallow
    copy. The ids are (N,) int64 by construction, so the shape checks of a new Detections
    would find nothing; they, like ``copy.copy``'s generic path, cost 5 us a frame."""
    tracked = object.__new__(Detections)
    tracked.__dict__.update(det.__dict__)
    tracked.tracker_id = ids
    return tracked


def _mixed(track_keys: np.ndarray, keys: np.ndarray) -> bool:
    """Whether some track and box have different class keys (with one label, as most counting
    cameras see, no pair is forbidden and the mask over the IoU matrix is skipped)."""
    return bool(np.count_nonzero(keys != keys[0]) or np.count_nonzero(track_keys != keys[0]))


class ClassKeys:
    """Label names interned as integers, so tracks match by *name* across model swaps: a new
    model that lists "person" third instead of first keeps every person's track. A class id
    outside the result's labels gets a key of its own (``#<id>``) rather than an error."""

    def __init__(self) -> None:
        self._names: dict[str, int] = {}
        self._labels: list[str] | None = None
        self._table = np.zeros(0, np.int64)

    def _key(self, name: str) -> int:
        return self._names.setdefault(name, len(self._names))

    def of(self, class_id: np.ndarray, labels: list[str]) -> np.ndarray:
        """(N,) int64 keys of these class ids under this frame's labels."""
        if labels != self._labels:  # a new model (or the first frame): a new table
            self._labels = list(labels)
            self._table = np.array([self._key(name) for name in labels], np.int64)
        table = self._table
        inside = (class_id >= 0) & (class_id < len(table))
        if inside.all():
            return table[class_id]
        keys = np.empty(len(class_id), np.int64)
        keys[inside] = table[class_id[inside]]
        keys[~inside] = [self._key(f"#{int(c)}") for c in class_id[~inside]]
        return keys


class TrackStage:
    """Sets ``tracker_id`` on each frame's detections; a classification passes untouched."""

    name = "track"
    needs_frame = False

    def __init__(self, options: TrackOptions, context: StageContext) -> None:
        ids_path = None if context.state_dir is None else context.state_dir / ID_FILE
        self.tracker = Tracker(options, TrackIds(ids_path))
        self._keys = ClassKeys()
        self._confirmed = context.stats.counter("track", "tracks_confirmed", context.source_id)
        self._live = context.stats.gauge("track", "tracks_live", context.source_id)

    def process(self, result: Result, frame: Frame | None) -> Result:
        det = result.predictions
        if not isinstance(det, Detections):
            return result
        keys = self._keys.of(det.class_id, result.labels)
        before = self.tracker.ids_given
        ids = self.tracker.update(det.xyxy, det.confidence, keys, result.ts)
        if self.tracker.ids_given != before:
            self._confirmed.inc(self.tracker.ids_given - before)
        self._live.set(self.tracker.live_count())
        result.predictions = _with_ids(det, ids)
        return result

    def close(self) -> None:
        pass


@register_stage("track", TrackOptions)
def build_track(options: TrackOptions, context: StageContext) -> TrackStage:
    return TrackStage(options, context)
