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
- **Time going back.** A track unseen for ``lost_s`` is forgotten; that time is measured on
  capture time that never goes back (``StageClock``), so when the frames' time steps back (a
  looped folder, NTP) tracks seen before the step are still forgotten. The hour and day
  tallies follow the frames' own time (a step back keeps counting in the current period).

The options are in line_options.py, the frame-edge geometry in line_edges.py and the id-switch
test in id_swaps.py; this module keeps the per-track state and applies the rules.
"""

from __future__ import annotations

import numpy as np

from edge_agent.analytics.id_swaps import off_course, swapped_pairs
from edge_agent.analytics.line_edges import EDGE_MARGIN, clipped_bands, edge_borders, extend_clipped
from edge_agent.analytics.line_options import LinesOptions
from edge_agent.analytics.tallies import IN, OUT, TallyStore
from edge_agent.analytics.trackstate import (
    LabelIndex,
    StageClock,
    TrackTable,
    any_stale,
    stale_rows,
)
from edge_agent.geometry import anchor_point_sets
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.types import UNCONFIRMED, Detections, Frame, Overlay, Publication, Result

#: Per (track, line) state and per track state, each packed in one float64 array so a frame's
#: tracks are read and written with one gather and one scatter: at 50 boxes numpy's per-call
#: cost, not the arithmetic, is what the frame pays.
SIGN, SETTLED, PENDING, FLIP_T, EDGE, DONE_IN, DONE_OUT, POS_X, POS_Y = range(9)
LAST_FRAME, LAST_TS, SEEN, CX, CY, VX, VY, KNOWN_W, KNOWN_H, LABEL = range(10)


class LineCounter:
    """The ``lines`` stage for one source (see the module docstring)."""

    name = "lines"
    needs_frame = False

    def __init__(self, options: LinesOptions, context: StageContext) -> None:
        self.lines = options.lines
        self.lost_s = options.lost_s
        self.a = np.array([ln.start for ln in self.lines], np.float64)
        self.b = np.array([ln.end for ln in self.lines], np.float64)
        self.span = self.b - self.a
        self.length = np.hypot(*self.span.T)
        self.length2 = self.length**2
        unit = self.span / self.length[:, None]
        self.normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)  # towards side +1
        self.offset = (self.a * self.normal).sum(1)  # signed distance = p . normal - offset
        self.normal_x, self.normal_y = self.normal[:, 0].copy(), self.normal[:, 1].copy()
        self.band = np.array([ln.hysteresis for ln in self.lines])
        self.min_frames = np.array([ln.min_frames for ln in self.lines], np.float64)
        self.in_side = [1 if ln.in_side == "right" else -1 for ln in self.lines]
        self.anchors = sorted({ln.anchor for ln in self.lines})
        self.anchor_of = np.array([self.anchors.index(ln.anchor) for ln in self.lines])
        # clipped[l, s]: the band on side s (0: -1, 1: +1) does not fit inside the frame.
        self.clipped = clipped_bands(self.a, self.b, self.normal, self.band)
        line_state = np.zeros(9)
        line_state[FLIP_T] = np.nan
        self.table = TrackTable(
            {
                "track": (np.float64, (10,), 0.0),
                "line": (np.float64, (len(self.lines), 9), line_state),
            }
        )
        self.labels = LabelIndex()
        self.allowed = np.zeros((0, len(self.lines)), bool)
        self.every_label = all(ln.labels is None for ln in self.lines)  # then allowed is all True
        self.store = TallyStore(None if context.state_dir is None else context.state_dir / "lines")
        self.tallies = [self.store.load(ln.name, tuple(ln.periods)) for ln in self.lines]
        # borders[s][b, l]: border b reaches side s of line l, where the band leaves the frame.
        self.borders = edge_borders(self.normal, self.offset, self.clipped)
        self.edge_lines = bool(self.clipped.any())
        self.frame = 0
        self.clock = StageClock()  # LAST_TS holds its readings, not capture times
        self._size: tuple[int, int] = (0, 0)
        self._scale = np.ones(4)
        self.overlays = [self._overlay(i) for i in range(len(self.lines))]

    def process(self, result: Result, frame: Frame | None) -> Result:
        det = result.predictions
        if not isinstance(det, Detections) or det.tracker_id is None:
            return result
        self.frame += 1
        self.clock.advance(result.ts)
        now = self.clock.now
        changed = {i for i, t in enumerate(self.tallies) if t.advance(result.ts)}
        if self.frame == 1:
            changed = set(range(len(self.lines)))  # replace what an earlier run left retained
        if self.labels.update(result.labels):
            self.allowed = np.array(
                [[ln.labels is None or n in ln.labels for ln in self.lines] for n in result.labels],
                bool,
            ).reshape(len(result.labels), len(self.lines))
        held = det.tracker_id != UNCONFIRMED
        n_held = np.count_nonzero(held)
        if n_held:
            if result.frame_size != self._size:  # boxes are divided by it: computed once
                self._size = result.frame_size
                self._scale = 1 / np.tile(np.asarray(result.frame_size, np.float64), 2)
            if n_held == len(det):  # every box confirmed, as most frames: no gathers
                self._observe(det.tracker_id, det.class_id, det.xyxy, now, changed)
            else:
                ids, cls, xyxy = det.tracker_id[held], det.class_id[held], det.xyxy[held]
                self._observe(ids, cls, xyxy, now, changed)
        self._vanished(changed)
        last_ts = self.table.cols["track"][:, LAST_TS]
        if any_stale(last_ts, now, self.lost_s):
            self.table.drop(stale_rows(last_ts, now, self.lost_s))
        for i in sorted(changed):
            payload = {**self.tallies[i].payload(), "ts": result.ts}
            result.publications.append(Publication("line", (self.lines[i].name,), payload))
            self.store.changed(self.lines[i].name)
            self.overlays[i] = self._overlay(i)
        result.overlays.extend(self.overlays)
        self.store.save_due()
        return result

    def _observe(
        self, ids: np.ndarray, cls: np.ndarray, xyxy: np.ndarray, now: float, changed: set[int]
    ) -> None:
        """Update every line's state of the confirmed tracks ``ids`` seen this frame (classes
        ``cls`` at boxes ``xyxy``), all at once; ``now`` is the stage clock's reading."""
        rows, new = self.table.rows(ids)
        boxes = xyxy * self._scale  # normalised, float64
        track = self.table.cols["track"][rows]
        centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        if self._swaps(rows, track, centre):
            track = self.table.cols["track"][rows]
        state = self.table.cols["line"][rows]
        old = None
        if not self.every_label:
            ok = self.allowed[cls]
            old = state.copy() if np.count_nonzero(ok) < ok.size else None
        low, high = boxes[:, :2] <= EDGE_MARGIN, boxes[:, 2:] >= 1 - EDGE_MARGIN
        touching = np.count_nonzero(low) + np.count_nonzero(high) > 0
        if touching:
            boxes, track[:, KNOWN_W : KNOWN_H + 1] = extend_clipped(
                boxes, track[:, KNOWN_W : KNOWN_H + 1], low, high
            )
            centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        else:
            track[:, KNOWN_W : KNOWN_H + 1] = boxes[:, 2:] - boxes[:, :2]
        points = anchor_point_sets(boxes, self.anchors)
        p = points[0][:, None, :] if len(points) == 1 else points[self.anchor_of].transpose(1, 0, 2)
        # (k, lines) signed distance, p . normal - offset, the dot product spelled out: a
        # reduction over an axis of two costs more than the arithmetic
        d = p[..., 0] * self.normal_x + p[..., 1] * self.normal_y - self.offset
        prev = state[..., SIGN]
        sign = np.sign(d)
        if np.count_nonzero(sign) < sign.size:  # exactly on the line: still on the last side
            sign = np.where(sign == 0, np.where(prev == 0, 1, prev), sign)
        flipped = (sign * prev < 0.0).nonzero()
        if len(flipped[0]):  # where the step from the last position crossed the line, along it
            r, i = flipped
            p0, p1 = state[r, i, POS_X : POS_Y + 1], p[r, i if p.shape[1] > 1 else 0]
            normal = self.normal[i]
            d0 = p0[:, 0] * normal[:, 0] + p0[:, 1] * normal[:, 1] - self.offset[i]
            state[r, i, FLIP_T] = self._along(i, p0 + (d0 / (d0 - d[r, i]))[:, None] * (p1 - p0))
        obs = np.where(np.abs(d) > self.band, sign, 0.0)  # beyond the band: its side
        settled = state[..., SETTLED]
        state[..., EDGE] = 0.0
        if touching and self.edge_lines:
            edge, settled = self._edges(state, new, low, high, p, sign, obs)
            obs = np.where(obs != 0, obs, edge)
        settled = np.where(settled == 0.0, obs, settled)
        state[..., PENDING] = (state[..., PENDING] + 1.0) * (obs * settled < 0.0)
        state[..., SETTLED], state[..., SIGN], state[..., POS_X : POS_Y + 1] = settled, sign, p
        if old is not None:  # a line that does not count a label keeps its state as it was
            state = np.where(ok[..., None], state, old)
        lab = self.labels.of_class[cls]
        ready_rows, ready_lines = (state[..., PENDING] >= self.min_frames).nonzero()
        if len(ready_rows):
            self._confirm(state, ready_rows, ready_lines, lab, changed)
        self.table.cols["line"][rows] = state
        gap = np.maximum(float(self.frame) - track[:, LAST_FRAME], 1.0)
        seen_before = track[:, SEEN] > 0.0
        track[:, VX : VY + 1] = (centre - track[:, CX : CY + 1]) * (seen_before / gap)[:, None]
        track[:, CX : CY + 1], track[:, LABEL] = centre, lab
        track[:, LAST_FRAME : LAST_TS + 1] = self.frame, now
        track[:, SEEN] += 1
        self.table.cols["track"][rows] = track

    def _edges(
        self,
        state: np.ndarray,
        new: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        p: np.ndarray,
        sign: np.ndarray,
        obs: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The frame-edge rules (module docstring): which tracks count as beyond the band
        because they touch a frame border that reaches that side of a line whose band leaves
        the frame, and the side tracks first seen there come from. Returns (edge, settled)."""
        touch = np.concatenate([low, high], 1)  # (k, 4): left, top, right, bottom
        at = [touch @ self.borders[k] for k in (0, 1)]  # (k, lines): at the edge on side -/+
        edge = np.where(at[1] & (sign > 0), 1.0, np.where(at[0] & (sign < 0), -1.0, 0.0))
        state[..., EDGE] = edge
        settled = state[..., SETTLED]
        if np.count_nonzero(new):  # first seen at an edge where the band does not fit
            for s, k in ((-1, 0), (1, 1)):
                came = new[:, None] & (settled == 0) & at[k] & (obs != -s)
                settled = np.where(came, s, settled)
                r, i = np.nonzero(came & (sign != s))
                state[r, i, FLIP_T] = self._along(i, p[r, i if p.shape[1] > 1 else 0])
        return edge, settled

    def _swaps(self, rows: np.ndarray, track: np.ndarray, centre: np.ndarray) -> bool:
        """Exchange the state of id pairs the tracker swapped (id_swaps.py); ``centre`` is
        where each box's centre is now, normalised. Only tracks seen twice, the last time in
        the previous frame, have a velocity to go by (a row new in the table has SEEN 0)."""
        pred = track[:, CX : CY + 1] + track[:, VX : VY + 1]
        jumped = off_course(centre, pred)
        if np.count_nonzero(jumped) < 2:
            return False
        jumped &= track[:, LAST_FRAME] == self.frame - 1
        jumped &= track[:, SEEN] >= 2
        pairs = swapped_pairs(centre, pred, jumped.nonzero()[0])
        for i, j in pairs:
            self.table.swap(int(rows[i]), int(rows[j]))
        return bool(pairs)

    def _vanished(self, changed: set[int]) -> None:
        """Tracks gone through a frame edge beyond a line: each frame gone confirms the side."""
        state = self.table.cols["line"]
        edge = state[..., EDGE]
        if not np.count_nonzero(edge):
            return
        gone = (self.table.cols["track"][:, LAST_FRAME] < self.frame)[:, None] & (edge != 0)
        gone &= edge == -state[..., SETTLED]
        if np.count_nonzero(gone):
            state[..., PENDING] += gone
            rows, lines = np.nonzero(gone & (state[..., PENDING] >= self.min_frames))
            labels = self.table.cols["track"][:, LABEL].astype(np.int64)
            self._confirm(state, rows, lines, labels, changed)

    def _confirm(
        self,
        state: np.ndarray,
        rows: np.ndarray,
        lines: np.ndarray,
        lab: np.ndarray,
        changed: set[int],
    ) -> None:
        """Settle the tracks ``min_frames`` on the new side; count those that crossed the
        segment itself, once per direction. ``lab`` is indexed by row of ``state``."""
        for r, i in zip(rows.tolist(), lines.tolist(), strict=True):
            to = -state[r, i, SETTLED]
            t = state[r, i, FLIP_T]
            direction = IN if to == self.in_side[i] else OUT
            done = DONE_IN if direction == IN else DONE_OUT
            if 0 <= t <= 1 and not state[r, i, done]:
                state[r, i, done] = 1
                self.tallies[i].add(self.labels.names[int(lab[r])], direction)
                changed.add(i)
            state[r, i, SETTLED], state[r, i, PENDING], state[r, i, FLIP_T] = to, 0, np.nan

    def _along(self, i: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Where points on lines ``i`` lie along their segments: 0 at start, 1 at end."""
        along = q - self.a[i]
        along *= self.span[i]
        return (along[:, 0] + along[:, 1]) / self.length2[i]

    def _overlay(self, i: int) -> Overlay:
        total_in, total_out = self.tallies[i].total.totals()
        line = self.lines[i]
        points = ((line.start[0], line.start[1]), (line.end[0], line.end[1]))
        return Overlay("line", line.name, points, f"in {total_in} out {total_out}")

    def finish(self, result: Result) -> Result:
        """The source ended (a file or folder done): save the tallies now, not at close, which
        may be much later if other sources run on."""
        self.store.flush()
        return result

    def close(self) -> None:
        self.store.flush()


@register_stage("lines", LinesOptions, requires=("track",))
def build_lines(options: LinesOptions, context: StageContext) -> LineCounter:
    return LineCounter(options, context)
