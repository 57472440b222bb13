"""Many polygons tested against many points at once: ``PolygonSet``.

``geometry.points_in_polygon`` tests one polygon per call and costs about 80 us at 50 points,
whatever the polygon: numpy's per-call overhead, not the arithmetic. A zones stage with three
zones or a shelf with twenty slots must not spend the frame's analytics budget (well under
0.5 ms) on it, so ``PolygonSet`` answers every (point, polygon) pair in a fixed number of numpy
calls, by the same rule (even-odd ray cast; a point on an edge or a vertex, within
``EDGE_TOLERANCE_PX``, is inside; tests/test_polygons.py compares the two):

- every polygon's edges are laid end to end and tested in one pass over all of them, each
  polygon's answer reduced over its run of edges (``np.logical_xor.reduceat``);
- axis-aligned rectangles (most shelf slots), when there are enough of them to pay for it, are
  left out of that pass and decided by their bounding box widened by the tolerance, which is
  exactly the rule's answer for them: their edges' tolerance bands are the widened border;
- when that pass is large (many points times many edges), only the points inside the bounding
  box of some such polygon enter it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.geometry import EDGE_TOLERANCE_PX

#: (points x rectangle edges) from which deciding rectangles apart pays for its extra numpy
#: calls. Measured at 50 points: 3 zones, one a rectangle, 17 us in one edge pass and 20 us
#: apart; 20 shelf slots, 16 of them rectangles, 44 us in one pass and 25 us apart.
RECTANGLE_PATH_MIN_PAIRS = 800
#: (points x edges) from which the bounding-box prefilter pays for its own numpy calls, which
#: depends on how many points it leaves out. Measured at 50 points: 3 zones covering most of
#: the frame (12 edges), 22 us with it and 15 us without; 2 small polygons (8 edges), 10 us with
#: it and 20 us without; at 200 points, 5 small polygons (17 edges), 24 us and 42 us.
PREFILTER_MIN_PAIRS = 2048


def _is_rectangle(poly: np.ndarray) -> bool:
    """An axis-aligned rectangle: four non-zero axis-aligned edges between the corners of its
    bounding box, enclosing all of it (not twice round, not an L, not flat)."""
    nxt = np.roll(poly, -1, axis=0)
    edge = nxt - poly
    moving = np.any(edge != 0, axis=1)
    low, high = poly.min(axis=0), poly.max(axis=0)
    cornered = np.all((poly == low) | (poly == high), axis=1)
    straight = np.any(edge == 0, axis=1)
    area = abs(float(np.sum(poly[:, 0] * nxt[:, 1] - nxt[:, 0] * poly[:, 1]))) / 2
    box_area = float(np.prod(high - low))
    return bool(
        np.count_nonzero(moving) == 4
        and cornered.all()
        and straight.all()
        and box_area > 0
        and np.isclose(area, box_area, rtol=1e-9, atol=0)
    )


class _Boxes:
    """The widened bounding boxes of some of the polygons, as (S, 1) columns to test against
    rows of points."""

    def __init__(
        self, low: np.ndarray, high: np.ndarray, which: np.ndarray, groups: np.ndarray
    ) -> None:
        self.which = which  # the polygons' indices in the set
        self.group = groups[which]
        self.x_low, self.y_low = low[which, 0, np.newaxis], low[which, 1, np.newaxis]
        self.x_high, self.y_high = high[which, 0, np.newaxis], high[which, 1, np.newaxis]

    def test(self, pts: np.ndarray, single: bool) -> np.ndarray:
        """(N, len(which)) bool: points inside the boxes."""
        if single:
            px, py = pts[0, :, 0], pts[0, :, 1]  # (N,) against (S, 1) boxes: (S, N)
        else:
            px, py = pts[self.group, :, 0], pts[self.group, :, 1]
        inside = px >= self.x_low
        inside &= px <= self.x_high
        inside &= py >= self.y_low
        inside &= py <= self.y_high
        return inside.T


class _Edges:
    """The edges of some of the polygons, end to end, without zero-length ones: those cross no
    ray and lie on no line, and their vertex starts the next edge that moves (the rule's
    vertex test is then the edge test at ``along == 0``)."""

    def __init__(self, polys: list[np.ndarray], which: np.ndarray, groups: np.ndarray) -> None:
        self.which = which  # the polygons' indices in the set
        edges: list[np.ndarray] = []
        owner: list[int] = []
        starts: list[int] = []
        for s in which:
            poly = polys[s]
            ends = np.roll(poly, -1, axis=0)
            moving = np.any(poly != ends, axis=1)
            starts.append(len(owner))
            edges.append(np.concatenate([poly[moving], ends[moving]], axis=1))
            owner.extend([int(s)] * int(np.count_nonzero(moving)))
        # One row per edge, (E, 1), against one column per point: every pass below runs over
        # (E, N) arrays whose rows are the points, the long axis, in memory order.
        x1, y1, x2, y2 = np.concatenate(edges).T[:, :, np.newaxis] if edges else np.zeros((4, 0, 1))
        self.x1, self.y1, self.y2 = x1, y1, y2
        self.ex, self.ey = x2 - x1, y2 - y1
        # x of the edge at the ray's y is x1 + (py - y1) * slope (only read where it straddles)
        self.slope = np.divide(self.ex, self.ey, out=np.zeros_like(x1), where=self.ey != 0)
        self.len2 = self.ex**2 + self.ey**2
        self.tol = EDGE_TOLERANCE_PX * np.sqrt(self.len2)
        self.group = groups[np.array(owner, np.intp)]
        self.starts = np.array(starts, np.intp)

    def __len__(self) -> int:
        return len(self.x1)

    def test(self, pts: np.ndarray, single: bool) -> np.ndarray:
        """(N, len(which)) bool: ``points_in_polygon``'s rule over every edge at once, each
        polygon's answer reduced over its run of edges."""
        if single:
            px, py = pts[0, :, 0], pts[0, :, 1]  # (N,) against (E, 1) edges: (E, N)
        else:
            px, py = pts[self.group, :, 0], pts[self.group, :, 1]
        dx, dy = px - self.x1, py - self.y1
        crossed = (self.y1 > py) != (self.y2 > py)  # the edge spans the ray's y, half-open
        crossed &= dx < dy * self.slope  # and lies on the ray, towards +x
        inside = np.logical_xor.reduceat(crossed, self.starts, axis=0)
        on_line = np.abs(self.ex * dy - self.ey * dx) <= self.tol
        if np.count_nonzero(on_line):  # rare, so the rest of the edge test is too
            along = self.ex * dx + self.ey * dy
            on_line &= (along >= -self.tol) & (along <= self.len2 + self.tol)
            inside |= np.logical_or.reduceat(on_line, self.starts, axis=0)
        return inside.T


class PolygonSet:
    """Polygons (each (K, 2), K >= 3, closed implicitly, any shape) tested against points.

    ``groups`` gives each polygon the set of points it is tested against: ``contains`` takes
    points (G, N, 2) and tests polygon ``s`` against ``points[groups[s]]`` (a zone or slot
    tests its own anchor of each box). Without ``groups``, every polygon tests the same
    points, (N, 2). Coordinates are the caller's (pixels or normalised); the tolerance is
    ``EDGE_TOLERANCE_PX`` in those units, as ``points_in_polygon``'s is.
    """

    def __init__(
        self, polygons: Sequence[np.ndarray | Sequence[Sequence[float]]], groups: Sequence[int] = ()
    ) -> None:
        polys = [np.asarray(p, np.float64) for p in polygons]
        for s, poly in enumerate(polys):
            if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
                raise ValueError(f"polygon {s} must have shape (K>=3, 2), but got {poly.shape}")
            if np.all(poly == poly[0]):
                raise ValueError(f"polygon {s} has all its vertices at one point")
        if not polys:
            raise ValueError("a PolygonSet needs at least one polygon, but got none")
        self.groups = np.array(groups if len(groups) else [0] * len(polys), np.intp)
        if self.groups.shape != (len(polys),) or self.groups.min() < 0:
            raise ValueError(
                f"groups must be {len(polys)} indices >= 0, one per polygon, but got {groups}"
            )
        self.size = len(polys)
        self._n_groups = int(self.groups.max()) + 1
        #: (S, 2) bounding boxes, widened by the tolerance: nothing outside is inside.
        self.low = np.array([p.min(axis=0) for p in polys]) - EDGE_TOLERANCE_PX
        self.high = np.array([p.max(axis=0) for p in polys]) + EDGE_TOLERANCE_PX
        #: (S,) bool: can be decided by the bounding box alone.
        self.rectangle = np.array([_is_rectangle(p) for p in polys], bool)
        self._rects = _Boxes(self.low, self.high, np.flatnonzero(self.rectangle), self.groups)
        self._all = _Edges(polys, np.arange(self.size), self.groups)
        self._others = _Edges(polys, np.flatnonzero(~self.rectangle), self.groups)
        #: the boxes of each edge pass's polygons, for its prefilter
        self._all_boxes = _Boxes(self.low, self.high, self._all.which, self.groups)
        self._others_boxes = _Boxes(self.low, self.high, self._others.which, self.groups)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N, S) bool: which points are inside which polygon (edges and vertices included).

        ``points`` is (N, 2), or (G, N, 2) with ``groups``: polygon ``s`` tests
        ``points[groups[s]]``.
        """
        pts = np.asarray(points, np.float64)
        if pts.ndim == 2:
            pts = pts[np.newaxis]
        if pts.ndim != 3 or pts.shape[2] != 2 or pts.shape[0] < self._n_groups:
            raise ValueError(
                f"points must have shape ({self._n_groups}, N, 2) (or (N, 2) without "
                f"groups), but got {np.shape(points)}"
            )
        single, n = pts.shape[0] == 1, pts.shape[1]
        if not len(self._others.which):
            return self._rects.test(pts, single)
        if n * 4 * len(self._rects.which) < RECTANGLE_PATH_MIN_PAIRS:
            return self._edge_pass(self._all, self._all_boxes, pts, single)
        out = np.empty((n, self.size), bool)
        out[:, self._rects.which] = self._rects.test(pts, single)
        out[:, self._others.which] = self._edge_pass(self._others, self._others_boxes, pts, single)
        return out

    def _edge_pass(self, edges: _Edges, boxes: _Boxes, pts: np.ndarray, single: bool) -> np.ndarray:
        """(N, len(edges.which)) bool; when the pass is large, only the points inside some
        polygon's bounding box enter it."""
        n = pts.shape[1]
        if n * len(edges) >= PREFILTER_MIN_PAIRS:
            rows = np.flatnonzero(boxes.test(pts, single).any(axis=1))
            if len(rows) < n:
                out = np.zeros((n, len(edges.which)), bool)
                if len(rows):
                    out[rows] = edges.test(pts[:, rows], single)
                return out
        return edges.test(pts, single)
