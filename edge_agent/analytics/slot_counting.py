"""How a shelf slot counts: which boxes are in which slots (``Polygons``, every slot in one
pass) and the debounced count (``SlotLevel``) that a hand in front of the shelf does not
move. The ``slots`` stage (slots.py) builds on these."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from edge_agent.geometry import EDGE_TOLERANCE_PX


class SlotLevel:
    """A slot's debounced count: it drops to X when no frame of the last ``debounce_s`` saw
    more than X, and rises to X when every one saw at least X. A new level must so hold for
    ``debounce_s`` of capture time; a shorter dip or blip changes nothing, and flicker around
    the count (a box missed now and then) keeps it. Each frame's count holds until the next
    frame, so after a gap (a stalled camera) one frame is not enough. The count is None until
    frames have spanned ``debounce_s``; it then starts at the most any of them saw (a missed
    box is likelier than a phantom one).

    Two monotonic queues give the window's maximum and minimum in O(1) per frame (the sliding
    window maximum); on a still shelf each holds one entry.
    """

    def __init__(self, debounce_s: float) -> None:
        self.debounce_s = debounce_s
        self.count: int | None = None
        self._start: float | None = None  # first frame of the current run of frames
        self._last = -math.inf
        self._most: deque[list[float]] = deque()  # [count, held until], counts decreasing
        self._least: deque[list[float]] = deque()  # counts increasing
        self._steady = False  # the count was committed and every frame of the window saw it

    def reset(self) -> None:
        """Forget the frames (not the count): the next change needs a whole window again."""
        self._start, self._last, self._steady = None, -math.inf, False
        self._most.clear()
        self._least.clear()

    def update(self, ts: float, seen: int) -> bool:
        """Add one frame's count; True when the debounced count changed or became known."""
        if self._steady and seen == self.count and ts >= self._last:
            self._last = ts  # a still shelf: the one entry of each queue holds on
            return False
        if ts < self._last:  # the clock or a looping video went back: start over
            self.reset()
        if self._start is None:
            self._start = ts
        self._last = ts
        cutoff = ts - self.debounce_s
        for queue, sign in ((self._most, 1), (self._least, -1)):
            if queue:
                queue[-1][1] = ts  # the previous frame's count held until this frame
            while queue and sign * queue[-1][0] <= sign * seen:
                queue.pop()  # never again the window's extreme: this frame outlasts it
            queue.append([seen, math.inf])
            while queue[0][1] <= cutoff:
                queue.popleft()
        if self._start > cutoff:
            return False
        most, least = int(self._most[0][0]), int(self._least[0][0])
        self._steady = most == least == seen and len(self._most) == len(self._least) == 1
        if self.count is None or most < self.count:
            new = most
        elif least > self.count:
            new = least
        else:
            return False
        changed = new != self.count
        self.count = new
        return changed


class Polygons:
    """Several polygons in pixels, as one padded (S, K, 2) array with their edges computed
    once (a slot's polygon changes only with the frame size), tested against many points.

    The rule is ``geometry.points_in_polygon``'s (edges and vertices count as inside, even-odd
    crossings) for each (point, polygon) pair at once: one call of that function per polygon
    costs about 80 us of numpy overhead, 1.6 ms a frame for 20 slots. Shorter polygons are
    padded by repeating their last vertex: a zero-length edge crosses no ray and lies on no
    line, and its vertex is tested already.
    """

    def __init__(self, vertices: np.ndarray) -> None:
        if vertices.ndim != 3 or vertices.shape[2] != 2 or vertices.shape[1] < 3:
            raise ValueError(f"vertices must have shape (S, K>=3, 2), but got {vertices.shape}")
        self.x1, self.y1 = vertices[..., 0], vertices[..., 1]
        self.x2, self.y2 = np.roll(self.x1, -1, axis=1), np.roll(self.y1, -1, axis=1)
        self.ex, self.ey = self.x2 - self.x1, self.y2 - self.y1
        self.length = np.hypot(self.ex, self.ey)
        self.tol = EDGE_TOLERANCE_PX * self.length
        self.low, self.high = vertices.min(axis=1), vertices.max(axis=1)  # (S, 2) bounds
        # A polygon that is its own bounding box (four axis-aligned edges between its corners,
        # enclosing all of it: most shelf slots) needs no edge test: ``near`` decides it,
        # edges included as ``contain`` would.
        x, y = self.x1, self.y1
        cornered = ((x == self.low[:, :1]) | (x == self.high[:, :1])) & (
            (y == self.low[:, 1:]) | (y == self.high[:, 1:])
        )
        straight = (self.ex == 0) | (self.ey == 0)
        area = np.abs(np.sum(self.x1 * self.y2 - self.x2 * self.y1, axis=1)) / 2
        box_area = np.prod(self.high - self.low, axis=1)
        self.boxy = (
            ((self.length > 0).sum(axis=1) == 4)
            & np.all(cornered & straight, axis=1)
            & (box_area > 0)
            & np.isclose(area, box_area, rtol=1e-9, atol=0)
        )

    def near(self, points: np.ndarray) -> np.ndarray:
        """(N, S) bool: which points lie within each polygon's bounding box (edges included),
        the only pairs ``contain`` needs to test."""
        x, y = points[:, 0:1], points[:, 1:2]
        low, high = self.low, self.high
        return (x >= low[:, 0]) & (x <= high[:, 0]) & (y >= low[:, 1]) & (y <= high[:, 1])

    def inside(self, points: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point index, polygon index) of every pair where the point (of ``points``, (N, 2))
        is inside the polygon, among the pairs ``allowed`` ((N, S) bool) names."""
        point, polygon = np.nonzero(allowed & self.near(points))
        tested = ~self.boxy[polygon]
        if tested.any():
            keep = ~tested
            keep[tested] = self.contain(points[point[tested]], polygon[tested])
            point, polygon = point[keep], polygon[keep]
        return point, polygon

    def contain(self, points: np.ndarray, which: np.ndarray) -> np.ndarray:
        """(P,) bool: whether each of ``points`` (P, 2) is inside polygon ``which`` (P,)."""
        px, py = points[:, 0:1], points[:, 1:2]  # (P, 1) against (P, K) edges
        x1, y1, x2, y2 = self.x1[which], self.y1[which], self.x2[which], self.y2[which]
        straddles = (y1 > py) != (y2 > py)  # the edge spans the ray's y, half-open
        x_at_py = x1 + np.divide(
            (py - y1) * (x2 - x1), y2 - y1, out=np.zeros(straddles.shape), where=straddles
        )
        crossings = np.count_nonzero(straddles & (px < x_at_py), axis=1)
        ex, ey, length, tol = self.ex[which], self.ey[which], self.length[which], self.tol[which]
        cross = ex * (py - y1) - ey * (px - x1)
        along = ex * (px - x1) + ey * (py - y1)
        on_segment = (
            (length > 0)
            & (np.abs(cross) <= tol)
            & (along >= -tol)
            & (along <= length * length + tol)
        )
        at_vertex = np.hypot(px - x1, py - y1) <= EDGE_TOLERANCE_PX
        return np.asarray(np.any(on_segment | at_vertex, axis=1) | (crossings % 2 == 1), bool)
