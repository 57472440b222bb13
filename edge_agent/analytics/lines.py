"""Counting tracks across lines, in and out: the ``lines`` stage (after ``track``).

Each confirmed track is followed by one point of its box (``anchor``). Per line it has a
*settled* side, the last side it was seen on beyond a band of ``hysteresis`` around the line.
A crossing counts when it has been beyond the band on the other side for ``min_frames``
consecutive frames, the point where its path crossed the line lies on the segment (not beside
it), and the track has not yet crossed that line in that direction. So a box jittering on the
line counts nothing, and one track counts at most one in and one out per line.

Three situations need more than that:

- **Frame edges.** A box leaving the frame is clipped, so its anchor stops short of the edge:
  a line near the edge may have no room for the band beyond it (supervision #1838). Where the
  band does not fit in the frame, a box touching the frame edge on that side counts as beyond
  the band once its anchor has passed the line, each frame it is gone after that confirms it,
  and a track first seen at that edge (its anchor not yet clearly across) comes from there.
- **Id switches.** When two objects pass each other the tracker may swap their ids; each id
  then jumps to where the other object was. Two tracks whose new positions are each where the
  *other* was heading (by their last velocities) have their line state exchanged, so the state
  follows the object, and a swap neither adds crossings nor loses them.
- **Restarts.** Totals and the hour and day tallies are kept in the state folder (tallies.py).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edge_agent.analytics.tallies import IN, OUT, PERIODS, Period, TallyStore
from edge_agent.analytics.trackstate import LabelIndex, TrackTable, stale_rows
from edge_agent.analytics.zones import Point, check_name, unique_names
from edge_agent.geometry import Anchor, anchor_points, side_of_segment
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.types import Detections, Frame, Overlay, Publication, Result

#: Shortest line accepted (normalised): shorter, "which side" is decided by pixel noise.
MIN_LINE_LENGTH = 0.01
#: A box side this close to the frame border (fraction of the frame) is clipped by it.
EDGE_MARGIN = 0.005
#: Id-switch test: each id moved at least this far (normalised) from where its velocity said,
#: and the exchanged ids explain the motion at least this much better (cost ratio).
SWAP_MIN_JUMP = 0.01
SWAP_GAIN = 0.5


class Line(BaseModel):
    """One counting line: a segment, which side is "in", and how crossings are confirmed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(description="Line name, used as a topic level: letters, digits, _ and -.")
    start: Point = Field(description="One end [x, y], normalised (0..1, x right, y down).")
    end: Point = Field(description="The other end [x, y]; at least 0.01 away from start.")
    in_side: Literal["left", "right"] = Field(
        description="The side that is 'in', as seen on screen looking from start towards end."
    )
    anchor: Anchor = Field(
        "bottom_center",
        description="The point of a box that crosses: bottom_center (feet, wheels on the "
        "ground), center, top_center, ... (the nine box points).",
    )
    min_frames: int = Field(
        2, ge=1, le=100, description="Consecutive frames beyond the band on the new side."
    )
    hysteresis: float = Field(
        0.02,
        ge=0.0,
        le=0.25,
        description="Half-width of the band around the line (normalised distance) a track "
        "must get past on the new side before a crossing counts.",
    )
    labels: list[str] | None = Field(
        None, min_length=1, description="Labels counted on this line (default: every label)."
    )
    periods: list[Period] = Field(
        list(PERIODS), description="Tallies kept beside the totals: hour, day (local time)."
    )

    _check_name = field_validator("name")(check_name)

    @field_validator("end")
    @classmethod
    def _long_enough(cls, value: Point, info: ValidationInfo) -> Point:
        start = info.data.get("start")
        if start is not None:
            length = float(np.hypot(value[0] - start[0], value[1] - start[1]))
            if length < MIN_LINE_LENGTH:
                raise ValueError(
                    f"end must be at least {MIN_LINE_LENGTH} from start, but the line is "
                    f"{length:.3g} long"
                )
        return value

    @field_validator("periods")
    @classmethod
    def _unique_periods(cls, value: list[Period]) -> list[Period]:
        if len(set(value)) != len(value):
            raise ValueError(f"each period may appear once, but got {value}")
        return value


class LinesOptions(BaseModel):
    """Counts confirmed tracks crossing lines, in and out, per label, with hourly and daily
    tallies kept across restarts (needs a ``track`` stage before it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[Line] = Field(min_length=1, description="The lines, each with its own name.")
    lost_frames: int = Field(
        300,
        ge=1,
        description="Frames a track may go unseen and keep its line state (its side, the "
        "crossings it counted); longer than the tracker keeps a lost track.",
    )

    @field_validator("lines")
    @classmethod
    def _unique(cls, value: list[Line]) -> list[Line]:
        return unique_names(value, "line")

    def labels_named(self) -> list[tuple[tuple[Any, ...], str]]:
        return [
            (("lines", i, "labels", j), label)
            for i, line in enumerate(self.lines)
            for j, label in enumerate(line.labels or ())
        ]


def _room(points: np.ndarray, direction: np.ndarray) -> float:
    """How far one can go from any of ``points`` along ``direction`` inside the unit square."""
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.where(direction > 0, (1 - points) / direction, -points / direction)
    return float(np.where(direction != 0, steps, np.inf).min())


def at_the_border(
    boxes: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """How normalised ``boxes`` (k, 4) meet the frame border, given each track's ``known``
    (width, height) from when it was not clipped (0: never seen whole).

    Returns the boxes with a clipped side extended back to the known size (a box leaving the
    frame keeps moving at its true speed instead of shrinking against the edge), which borders
    each touches (k, 4: left, top, right, bottom), the middle of the box's side on each border
    (k * 4, 2: to tell on which side of a line that border lies) and the new known sizes.
    """
    touch = np.concatenate([boxes[:, :2] <= EDGE_MARGIN, boxes[:, 2:] >= 1 - EDGE_MARGIN], 1)
    low, high = touch[:, :2], touch[:, 2:]
    seen = boxes[:, 2:] - boxes[:, :2]
    longer = known > seen
    whole = boxes.copy()
    whole[:, 2:] = np.where(high & ~low & longer, boxes[:, :2] + known, boxes[:, 2:])
    whole[:, :2] = np.where(low & ~high & longer, boxes[:, 2:] - known, boxes[:, :2])
    cx, cy = (
        np.clip((boxes[:, 0] + boxes[:, 2]) / 2, 0, 1),
        np.clip((boxes[:, 1] + boxes[:, 3]) / 2, 0, 1),
    )
    zero, one = np.zeros_like(cx), np.ones_like(cx)
    contact = np.stack([zero, cy, cx, zero, one, cy, cx, one], 1).reshape(-1, 2)
    return whole, touch, contact, np.where(low | high, known, seen)


class LineCounter:
    """The ``lines`` stage for one source (see the module docstring)."""

    name = "lines"
    needs_frame = False

    def __init__(self, options: LinesOptions, context: StageContext) -> None:
        self.lines = options.lines
        self.lost_frames = options.lost_frames
        self.a = np.array([ln.start for ln in self.lines], np.float64)
        self.b = np.array([ln.end for ln in self.lines], np.float64)
        self.length = np.hypot(*(self.b - self.a).T)
        unit = (self.b - self.a) / self.length[:, None]
        normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)  # towards side +1 (screen-right)
        self.in_side = [1 if ln.in_side == "right" else -1 for ln in self.lines]
        # clipped[l, s]: the band on side s (0: -1, 1: +1) does not fit inside the frame.
        self.clipped = np.array(
            [
                [_room(np.stack([a, b]), s * n) <= ln.hysteresis + EDGE_MARGIN for s in (-1, 1)]
                for a, b, n, ln in zip(self.a, self.b, normal, self.lines, strict=True)
            ]
        )
        n = len(self.lines)
        self.table = TrackTable(
            {
                "last_frame": (np.int64, (), 0),
                "seen": (np.int32, (), 0),
                "centre": (np.float64, (2,), 0.0),
                "size": (np.float64, (2,), 0.0),
                "vel": (np.float64, (2,), 0.0),
                "label": (np.int32, (), -1),
                "pos": (np.float64, (n, 2), 0.0),
                "sign": (np.int8, (n,), 0),
                "settled": (np.int8, (n,), 0),
                "pending": (np.int16, (n,), 0),
                "flip_t": (np.float64, (n,), np.nan),
                "edge": (np.int8, (n,), 0),
                "done": (bool, (n, 2), False),
            }
        )
        self.labels = LabelIndex()
        self.allowed = np.zeros((0, n), bool)
        self.store = TallyStore(None if context.state_dir is None else context.state_dir / "lines")
        self.tallies = [self.store.load(ln.name, tuple(ln.periods)) for ln in self.lines]
        self.frame = 0
        self.overlays = [self._overlay(i) for i in range(n)]

    def process(self, result: Result, frame: Frame | None) -> Result:
        det = result.predictions
        if not isinstance(det, Detections) or det.tracker_id is None:
            return result
        self.frame += 1
        changed = {i for i, t in enumerate(self.tallies) if t.advance(result.ts)}
        if self.frame == 1:
            changed = set(range(len(self.lines)))  # replace what an earlier run left retained
        if self.labels.update(result.labels):
            self.allowed = np.array(
                [
                    [ln.labels is None or name in ln.labels for ln in self.lines]
                    for name in result.labels
                ],
                bool,
            ).reshape(len(result.labels), len(self.lines))
        idx = np.flatnonzero(det.confirmed())
        if len(idx):
            self._observe(det, idx, np.asarray(result.frame_size, np.float64), changed)
        self._vanished(changed)
        self.table.drop(stale_rows(self.table.cols["last_frame"], self.frame, self.lost_frames))
        for i in sorted(changed):
            payload = {**self.tallies[i].payload(), "ts": result.ts}
            result.publications.append(Publication("line", (self.lines[i].name,), payload))
            self.store.changed(self.lines[i].name)
            self.overlays[i] = self._overlay(i)
        result.overlays.extend(self.overlays)
        self.store.save_due()
        return result

    def _observe(
        self, det: Detections, idx: np.ndarray, size: np.ndarray, changed: set[int]
    ) -> None:
        assert det.tracker_id is not None
        c = self.table.cols
        rows, new = self.table.rows(det.tracker_id[idx])
        boxes, touch, contact, c["size"][rows] = at_the_border(
            det.xyxy[idx] / np.tile(size, 2), c["size"][rows]
        )
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        self._swaps(rows, new, centre)
        lab = self.labels.of_class[det.class_id[idx]]
        allowed = self.allowed[det.class_id[idx]]
        points = {a: anchor_points(boxes, a) for a in {ln.anchor for ln in self.lines}}
        for i, line in enumerate(self.lines):
            ok = allowed[:, i]
            if ok.any():
                side = np.sign(side_of_segment(contact, self.a[i], self.b[i])).reshape(-1, 4)
                at_edge = [
                    self.clipped[i, k] & (touch[ok] & (side[ok] == s)).any(1)
                    for k, s in ((0, -1), (1, 1))
                ]
                self._line(i, rows[ok], new[ok], points[line.anchor][ok], at_edge, lab[ok], changed)
        gap = np.maximum(self.frame - c["last_frame"][rows], 1)[:, None]
        c["vel"][rows] = np.where(c["seen"][rows, None] > 0, (centre - c["centre"][rows]) / gap, 0)
        c["centre"][rows], c["label"][rows], c["last_frame"][rows] = centre, lab, self.frame
        c["seen"][rows] = np.minimum(c["seen"][rows] + 1, 1000)

    def _swaps(self, rows: np.ndarray, new: np.ndarray, centre: np.ndarray) -> None:
        """Exchange the state of id pairs the tracker swapped (see the module docstring)."""
        c = self.table.cols
        pred = c["centre"][rows] + c["vel"][rows]
        jump = np.hypot(*(centre - pred).T)
        cand = np.flatnonzero(
            ~new
            & (c["last_frame"][rows] == self.frame - 1)
            & (c["seen"][rows] >= 2)
            & (jump > SWAP_MIN_JUMP)
        )
        if len(cand) < 2:
            return
        cross = np.hypot(*(centre[cand, None] - pred[None, cand]).transpose(2, 0, 1))  # [i, j]
        keep = jump[cand][:, None] + jump[cand][None, :]
        ratio = (cross + cross.T) / keep
        used: set[int] = set()
        pairs = [(ratio[i, j], i, j) for i, j in itertools.combinations(range(len(cand)), 2)]
        for score, i, j in sorted(pairs):
            if score < SWAP_GAIN and i not in used and j not in used:
                used.update((i, j))
                self.table.swap(int(rows[cand[i]]), int(rows[cand[j]]))

    def _line(
        self,
        i: int,
        rows: np.ndarray,
        new: np.ndarray,
        p: np.ndarray,
        at_edge: list[np.ndarray],
        lab: np.ndarray,
        changed: set[int],
    ) -> None:
        """One line's update for the tracks seen this frame (anchors ``p``, normalised)."""
        line, c = self.lines[i], self.table.cols
        d = side_of_segment(p, self.a[i], self.b[i]) / self.length[i]
        prev = c["sign"][rows, i]
        sign = np.sign(d).astype(np.int8)
        sign = np.where(sign == 0, np.where(prev == 0, 1, prev), sign).astype(np.int8)
        flipped = np.flatnonzero((prev != 0) & (sign != prev))
        if len(flipped):  # where the step from the last position crossed the line, along it
            p0, p1 = c["pos"][rows[flipped], i], p[flipped]
            d0 = side_of_segment(p0, self.a[i], self.b[i]) / self.length[i]
            q = p0 + (d0 / (d0 - d[flipped]))[:, None] * (p1 - p0)
            c["flip_t"][rows[flipped], i] = self._along(i, q)
        edge = np.where(at_edge[1] & (sign > 0), 1, np.where(at_edge[0] & (sign < 0), -1, 0))
        beyond = np.where(d > line.hysteresis, 1, np.where(d < -line.hysteresis, -1, 0))
        obs = np.where(beyond != 0, beyond, edge)
        settled = c["settled"][rows, i]
        born = new & (settled == 0)
        if born.any():  # first seen at an edge where the band does not fit: came from there
            for s, k in ((-1, 0), (1, 1)):
                came = born & at_edge[k] & (beyond != -s)
                settled = np.where(came, s, settled)
                fresh = rows[came & (sign != s)]
                c["flip_t"][fresh, i] = self._along(i, p[came & (sign != s)])
        settled = np.where((settled == 0) & (obs != 0), obs, settled).astype(np.int8)
        grow = (settled != 0) & (obs == -settled)
        c["pending"][rows, i] = np.where(grow, c["pending"][rows, i] + 1, 0)
        c["settled"][rows, i], c["sign"][rows, i], c["pos"][rows, i] = settled, sign, p
        c["edge"][rows, i] = edge
        self._confirm(i, rows, lab, changed)

    def _vanished(self, changed: set[int]) -> None:
        """Tracks gone through a frame edge beyond a line: each frame gone confirms the side."""
        c = self.table.cols
        gone = (
            (c["last_frame"] < self.frame)[:, None]
            & (c["edge"] != 0)
            & (c["edge"] == -c["settled"])
        )
        if gone.any():
            c["pending"][gone] += 1
            for i in range(len(self.lines)):
                rows = np.flatnonzero(gone[:, i])
                self._confirm(i, rows, c["label"][rows], changed)

    def _confirm(self, i: int, rows: np.ndarray, lab: np.ndarray, changed: set[int]) -> None:
        """Settle the tracks ``min_frames`` on the new side; count those that crossed here."""
        c = self.table.cols
        ready = c["pending"][rows, i] >= self.lines[i].min_frames
        for r, label in zip(rows[ready], lab[ready], strict=True):
            to = -int(c["settled"][r, i])
            t = c["flip_t"][r, i]
            direction = IN if to == self.in_side[i] else OUT
            if 0 <= t <= 1 and not c["done"][r, i, direction]:
                c["done"][r, i, direction] = True
                self.tallies[i].add(self.labels.names[label], direction)
                changed.add(i)
            c["settled"][r, i], c["pending"][r, i], c["flip_t"][r, i] = to, 0, np.nan

    def _along(self, i: int, q: np.ndarray) -> np.ndarray:
        """Where points on the line lie along the segment: 0 at start, 1 at end."""
        return ((q - self.a[i]) @ (self.b[i] - self.a[i])) / self.length[i] ** 2

    def _overlay(self, i: int) -> Overlay:
        total_in, total_out = self.tallies[i].total.totals()
        line = self.lines[i]
        return Overlay("line", line.name, (line.start, line.end), f"in {total_in} out {total_out}")

    def close(self) -> None:
        self.store.flush()


@register_stage("lines", LinesOptions, requires=("track",))
def build_lines(options: LinesOptions, context: StageContext) -> LineCounter:
    return LineCounter(options, context)
