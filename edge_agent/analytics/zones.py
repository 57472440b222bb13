"""Who is in which zone, for how long: the ``zones`` stage (after ``track``).

A zone is a polygon in normalised coordinates. A confirmed track is tested by one point of its
box (``anchor``, bottom centre by default: where a person stands). Membership changes only
after ``inertia`` consecutive frames on the other side of the border, so a box flickering on
the border neither enters nor leaves. A track the detector misses for a while (occluded) keeps
its place for ``lost_s`` seconds; coming back with the same id it has never left. Past that it
exits at the time it was last seen. Counts per zone and label are kept as entries minus
exits, each visit counted under the label it entered with, so ``count == entries - exits``
holds exactly. Time for dwell, loitering and ``lost_s`` is capture time that never goes back
(``StageClock``): when the frames' time steps back (a looped folder, NTP), the step counts as
no time passing, so a track seen before it still leaves. The options and their checks are in
zone_options.py; docs/zones-lines.md has the options, payloads and the reasoning.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.analytics.trackstate import (
    LabelIndex,
    StageClock,
    TrackTable,
    any_stale,
    stale_rows,
)
from edge_agent.analytics.zone_options import ZonesOptions
from edge_agent.geometry import anchor_point_sets
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.polygons import PolygonSet
from edge_agent.types import (
    UNCONFIRMED,
    Detections,
    Frame,
    Overlay,
    Publication,
    Result,
    SnapshotRequest,
)

#: Per (track, zone) state, packed in one float64 array so a frame's tracks are read and written
#: with one gather and one scatter (numpy's per-call cost, not the arithmetic, is the budget).
INSIDE, STREAK, STREAK_TS, ENTER_TS, LABEL, LOITERED = range(6)


@dataclass
class _Tally:
    entries: int = 0
    exits: int = 0
    dwell_sum_s: float = 0.0
    dwell_max_s: float = 0.0


class ZoneCounter:
    """The ``zones`` stage for one source (see the module docstring)."""

    name = "zones"
    needs_frame = False

    def __init__(self, options: ZonesOptions, context: StageContext) -> None:
        self.zones = options.zones
        self.lost_s = options.lost_s
        self.anchors = sorted({z.anchor for z in self.zones})
        self.polygons = PolygonSet(
            [z.polygon for z in self.zones], [self.anchors.index(z.anchor) for z in self.zones]
        )
        self.inertia = np.array([z.inertia for z in self.zones], np.float64)
        self.loiter_s = np.array([z.loiter_s or np.inf for z in self.zones])
        self.loiters = any(z.loiter_s for z in self.zones)
        n = len(self.zones)
        state = np.zeros(6)
        state[LABEL] = -1
        self.table = TrackTable(
            {"seen": (np.float64, (), 0.0), "zone": (np.float64, (n, 6), state)}
        )  # seen, and the times in zone: readings of self.clock, not capture times
        self.clock = StageClock()
        self.labels = LabelIndex()
        self.allowed = np.zeros((0, n), bool)  # (class, zone): the zone counts this class
        self.every_label = all(z.labels is None for z in self.zones)  # then allowed is all True
        self._size: tuple[int, int] = (0, 0)
        self._scale = np.ones(2)  # the frame size points are divided by
        self.tallies: dict[tuple[int, int], _Tally] = {}
        self.since: float | None = None
        self._points = [tuple((float(x), float(y)) for x, y in z.polygon) for z in self.zones]
        self.overlays = [self._overlay(z) for z in range(n)]

    def process(self, result: Result, frame: Frame | None) -> Result:
        det = result.predictions
        if not isinstance(det, Detections) or det.tracker_id is None:
            return result  # classifications (and untracked boxes) pass through untouched
        self.since = result.ts if self.since is None else self.since
        self.clock.advance(result.ts)
        changed: set[tuple[int, int]] = set()
        if self.labels.update(result.labels):
            self._labels_changed(result.labels, changed)
        held = det.tracker_id != UNCONFIRMED
        n_held = np.count_nonzero(held)
        if n_held == len(det) and n_held:  # every box confirmed, as most frames: no gathers
            member = self._observe(det.tracker_id, det.class_id, det.xyxy, result, changed)
        else:
            member = np.zeros((len(det), len(self.zones)), bool)
            if n_held:
                member[held] = self._observe(
                    det.tracker_id[held], det.class_id[held], det.xyxy[held], result, changed
                )
        self._forget(self.clock.now, changed)
        det.data["zones"] = member
        for z, lab in sorted(changed):
            result.publications.append(self._publication(z, lab, result.ts))
        for z in {z for z, _ in changed}:
            self.overlays[z] = self._overlay(z)
        result.overlays.extend(self.overlays)
        return result

    def _labels_changed(self, labels: list[str], changed: set[tuple[int, int]]) -> None:
        """New labels (the first frame, a model swap): every zone's state is published for each
        label it counts, so no retained message from an earlier run is left standing."""
        self.allowed = np.array(
            [[z.labels is None or name in z.labels for z in self.zones] for name in labels], bool
        ).reshape(len(labels), len(self.zones))
        for z, zone in enumerate(self.zones):
            for name in zone.labels or labels:
                changed.add((z, self.labels.add(name)))
        changed.update(self.tallies)

    def _observe(
        self,
        ids: np.ndarray,
        cls: np.ndarray,
        boxes: np.ndarray,
        result: Result,
        changed: set[tuple[int, int]],
    ) -> np.ndarray:
        """Update the confirmed tracks ``ids`` seen this frame, of classes ``cls`` at ``boxes``;
        returns their membership (k, zones)."""
        now = self.clock.now
        rows, _ = self.table.rows(ids)
        if result.frame_size != self._size:  # points are divided by it: made once
            self._size = result.frame_size
            self._scale = np.asarray(result.frame_size, np.float64)
        points = anchor_point_sets(boxes, self.anchors) / self._scale
        geo = self.polygons.contains(points)  # normalised, as the polygons are (G, k, 2)
        if not self.every_label:
            geo &= self.allowed[cls]
        s = self.table.cols["zone"][rows]  # (k, zones, fields), a copy
        inside = s[..., INSIDE] > 0.0
        contrary = geo != inside
        if np.count_nonzero(contrary):
            streak = np.where(contrary, s[..., STREAK] + 1.0, 0.0)
            np.copyto(s[..., STREAK_TS], now, where=streak == 1.0)  # a streak begins
            flip = streak >= self.inertia
            s[..., STREAK] = np.where(flip, 0.0, streak)
            if np.count_nonzero(flip):
                self._flip(s, flip, inside, self.labels.of_class[cls], changed)
                inside ^= flip
        else:
            s[..., STREAK] = 0
        if self.loiters:
            due = inside > s[..., LOITERED]  # inside and not yet told (LOITERED is 0 or 1)
            due &= now - s[..., ENTER_TS] >= self.loiter_s
            if np.count_nonzero(due):
                for r, z in zip(*np.nonzero(due), strict=True):
                    s[r, z, LOITERED] = 1
                    track = int(ids[r])
                    self._loitering(result, int(z), int(s[r, z, LABEL]), track, s[r, z, ENTER_TS])
        self.table.cols["zone"][rows] = s
        self.table.cols["seen"][rows] = now
        return inside

    def _flip(
        self,
        s: np.ndarray,
        flip: np.ndarray,
        inside: np.ndarray,
        lab: np.ndarray,
        changed: set[tuple[int, int]],
    ) -> None:
        """Count the entries and exits of this frame (a few: a loop is fine)."""
        rows, zones = flip.nonzero()
        for r, z in zip(rows.tolist(), zones.tolist(), strict=True):
            if inside[r, z]:
                dwell = float(s[r, z, STREAK_TS] - s[r, z, ENTER_TS])
                self._exit(z, int(s[r, z, LABEL]), dwell, changed)
                s[r, z, INSIDE] = 0
            else:
                label = int(lab[r])
                s[r, z, ENTER_TS] = s[r, z, STREAK_TS]
                s[r, z, LABEL] = label
                s[r, z, LOITERED] = 0
                self.tallies.setdefault((z, label), _Tally()).entries += 1
                changed.add((z, label))
                s[r, z, INSIDE] = 1

    def _exit(self, z: int, lab: int, dwell_s: float, changed: set[tuple[int, int]]) -> None:
        tally = self.tallies.setdefault((z, lab), _Tally())
        tally.exits += 1
        tally.dwell_sum_s += max(dwell_s, 0.0)
        tally.dwell_max_s = max(tally.dwell_max_s, dwell_s)
        changed.add((z, lab))

    def _forget(self, now: float, changed: set[tuple[int, int]]) -> None:
        """Tracks unseen past ``lost_s`` leave their zones, as of when last seen."""
        seen = self.table.cols["seen"]
        if not any_stale(seen, now, self.lost_s):
            return
        stale = stale_rows(seen, now, self.lost_s)
        s = self.table.cols["zone"]
        for r, z in zip(*np.nonzero(stale[:, None] & (s[..., INSIDE] > 0)), strict=True):
            self._exit(int(z), int(s[r, z, LABEL]), float(seen[r] - s[r, z, ENTER_TS]), changed)
        self.table.drop(stale)

    def _loitering(self, result: Result, z: int, lab: int, track: int, start: float) -> None:
        event: dict[str, Any] = {
            "type": "loitering",
            "id": uuid.uuid4().hex,
            "zone": self.zones[z].name,
            "label": self.labels.names[lab],
            "track_id": track,
            "start": self.clock.to_ts(float(start)),
            "dwell_s": round(self.clock.now - start, 3),
            "loiter_s": self.zones[z].loiter_s,
            "ts": result.ts,
            "snapshot": None,  # the snapshot stage sets the file name, as for every event
        }
        result.publications.append(Publication("event", (), event))
        result.snapshot_requests.append(SnapshotRequest("loitering", result.ts, event=event))

    def _publication(self, z: int, lab: int, ts: float) -> Publication:
        tally = self.tallies.get((z, lab), _Tally())
        s = self.table.cols["zone"][:, z]
        here = (s[:, INSIDE] > 0.0) & (s[:, LABEL] == float(lab))
        entered = s[:, ENTER_TS][here]
        done = tally.exits
        payload = {
            "count": tally.entries - tally.exits,
            "entries": tally.entries,
            "exits": tally.exits,
            "current_since": (
                self.clock.to_ts(float(np.minimum.reduce(entered))) if len(entered) else None
            ),
            "dwell_s": {
                "mean": round(tally.dwell_sum_s / done, 3) if done else None,
                "max": round(tally.dwell_max_s, 3) if done else None,
            },
            "since": self.since,
            "ts": ts,
        }
        return Publication("zone", (self.zones[z].name, self.labels.names[lab]), payload)

    def _overlay(self, z: int) -> Overlay:
        counts = [
            f"{self.labels.names[lab]} {t.entries - t.exits}"
            for (zone, lab), t in sorted(self.tallies.items())
            if zone == z and t.entries > t.exits
        ]
        return Overlay("zone", self.zones[z].name, self._points[z], ", ".join(counts) or "empty")

    def close(self) -> None:
        pass


@register_stage("zones", ZonesOptions, requires=("track",))
def build_zones(options: ZonesOptions, context: StageContext) -> ZoneCounter:
    return ZoneCounter(options, context)
