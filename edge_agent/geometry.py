"""Every box conversion and geometric test, in one place, vectorised numpy.

Inside the agent a box is ``xyxy``: (x1, y1, x2, y2) in pixels of the source frame, x to the
right and y **down** (image rows). Other layouts are converted on the way in (``boxes_to_xyxy``)
and the Custom Vision shape on the way out (``xyxy_to_custom_vision``). The tests that zones and
lines need (``box_iou``, ``anchor_points``, ``points_in_polygon``, ``side_of_segment``) take
whole arrays, one row per detection, as supervision's ``box_iou_batch`` and ``cross_product``
do (supervision/detection/utils.py), so a stage never loops over detections in Python.

Geometric tests compute in float64: pixel coordinates reach thousands, their products millions,
past float32's 24-bit mantissa, and "exactly on the line" must mean exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

BoxFormat = Literal["xyxy", "yxyx", "xywh", "cxcywh"]
BOX_FORMATS: tuple[str, ...] = get_args(BoxFormat)

Anchor = Literal[
    "center",
    "center_left",
    "center_right",
    "top_center",
    "top_left",
    "top_right",
    "bottom_center",
    "bottom_left",
    "bottom_right",
]
#: Each anchor as fractions of the box's width and height from (x1, y1); y grows downwards,
#: so "bottom" is y2, where a standing person or a parked car touches the floor.
ANCHOR_FRACTIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "center_left": (0.0, 0.5),
    "center_right": (1.0, 0.5),
    "top_center": (0.5, 0.0),
    "top_left": (0.0, 0.0),
    "top_right": (1.0, 0.0),
    "bottom_center": (0.5, 1.0),
    "bottom_left": (0.0, 1.0),
    "bottom_right": (1.0, 1.0),
}
#: A point this close to a polygon edge (in pixels, perpendicular) counts as on it.
EDGE_TOLERANCE_PX = 1e-9


def _check(name: str, value: np.ndarray, last: int) -> np.ndarray:
    """``value`` as a float64 (N, last) array, or ValueError naming expected vs got."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != last:
        raise ValueError(f"{name} must have shape (N, {last}), but got shape {array.shape}")
    return array


def _rows(name: str, value: np.ndarray, last: int) -> np.ndarray:
    """``value`` (N, last) as float64 rows (last, N), contiguous, in one copy; or ValueError."""
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[1] != last:
        raise ValueError(f"{name} must have shape (N, {last}), but got shape {array.shape}")
    return array.T.astype(np.float64, order="C")


# --- conversions ------------------------------------------------------------------------------


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(x, y, w, h) top-left form -> (x1, y1, x2, y2), float32."""
    out = xywh.astype(np.float32).copy()
    out[..., 2] = xywh[..., 0] + xywh[..., 2]
    out[..., 3] = xywh[..., 1] + xywh[..., 3]
    return out


def cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) centre form -> (x1, y1, x2, y2), float32."""
    out = np.empty_like(cxcywh, dtype=np.float32)
    half_w = cxcywh[..., 2] / 2
    half_h = cxcywh[..., 3] / 2
    out[..., 0] = cxcywh[..., 0] - half_w
    out[..., 1] = cxcywh[..., 1] - half_h
    out[..., 2] = cxcywh[..., 0] + half_w
    out[..., 3] = cxcywh[..., 1] + half_h
    return out


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (x, y, w, h) top-left form, float32 (OpenCV's Rect layout)."""
    out = xyxy.astype(np.float32).copy()
    out[..., 2:] = out[..., 2:] - out[..., :2]
    return out


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h) centre form, float32 (the SSD box coder's layout)."""
    boxes = xyxy.astype(np.float32)
    out = np.empty_like(boxes)
    out[..., 2:] = boxes[..., 2:] - boxes[..., :2]
    out[..., :2] = boxes[..., :2] + out[..., 2:] / 2
    return out


def boxes_to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """(N, 4) boxes in any supported layout (``BOX_FORMATS``) -> xyxy, float32."""
    if box_format == "xyxy":
        return boxes.astype(np.float32)
    if box_format == "yxyx":
        return boxes[:, [1, 0, 3, 2]].astype(np.float32)
    if box_format == "xywh":
        return xywh_to_xyxy(boxes)
    if box_format == "cxcywh":
        return cxcywh_to_xyxy(boxes)
    raise ValueError(f"box_format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")


def xyxy_to_custom_vision(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels xyxy -> (left, top, width, height) in [0, 1], clipped to the frame."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, but got {width}x{height}")
    scale = np.array([width, height, width, height], np.float32)
    norm = np.clip(xyxy.astype(np.float32) / scale, 0.0, 1.0)
    out = norm.copy()
    out[:, 2] = norm[:, 2] - norm[:, 0]
    out[:, 3] = norm[:, 3] - norm[:, 1]
    return out


# --- tests --------------------------------------------------------------------------------


def box_area(xyxy: np.ndarray) -> np.ndarray:
    """(N,) areas, float64; a box with x2 < x1 or y2 < y1 has area 0, not a negative one."""
    return _areas(_check("xyxy", xyxy, 4).T)


def _areas(rows: np.ndarray) -> np.ndarray:
    """(N,) areas of boxes given as coordinate rows (4, N): x1, y1, x2, y2."""
    size = rows[2:] - rows[:2]
    np.maximum(size, 0.0, out=size)
    return size[0] * size[1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of every box of ``a`` (N, 4) with every box of ``b``
    (M, 4), both xyxy, as float64 in [0, 1].

    When the union is empty (two zero-area boxes) the IoU is 0, never NaN: such a pair
    overlaps in no area, and 0 keeps matching code from pairing degenerate boxes.
    """
    # The tracker calls this every frame, and at 50 boxes numpy's per-call cost is most of it:
    # both sets' coordinates are copied into contiguous rows (4, N + M), so that their areas
    # take one pass and x and y go through each step together as (2, N, M) blocks.
    boxes_a, boxes_b = _check("a", a, 4), _check("b", b, 4)
    n = len(boxes_a)
    rows = np.concatenate([boxes_a, boxes_b]).T.copy()
    corners_a, corners_b = rows[:, :n, np.newaxis], rows[:, np.newaxis, n:]
    size = np.minimum(corners_a[2:], corners_b[2:])  # (2, N, M) width and height of the overlap
    size -= np.maximum(corners_a[:2], corners_b[:2])
    np.maximum(size, 0.0, out=size)
    inter = size[0] * size[1]
    areas = _areas(rows)
    union = areas[:n, np.newaxis] + areas[np.newaxis, n:]
    union -= inter
    if 0.0 < areas.min(initial=np.inf) and areas.max(initial=0.0) < np.inf:
        # Every box has a finite area > 0, so every union does too (it is at least the larger
        # area): the plain division, half the cost of the guarded one below.
        return np.divide(inter, union, out=inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def anchor_points(xyxy: np.ndarray, anchor: Anchor | str = "bottom_center") -> np.ndarray:
    """(N, 2) float64 points, one per box, at ``anchor`` (``ANCHOR_FRACTIONS``).

    ``bottom_center`` is the default for zones and lines on the ground: the middle of the box's
    lower edge (y2, since y grows downwards) is where the object stands.
    """
    return anchor_point_sets(xyxy, (anchor,))[0]


def anchor_point_sets(xyxy: np.ndarray, anchors: Sequence[Anchor | str]) -> np.ndarray:
    """(G, N, 2) float64: ``anchor_points`` of every box for each of the G ``anchors``, in a few
    numpy calls whatever G (zones, lines and slots each test several anchors every frame).

    Computed and stored as (G, 2, N), x and y each a contiguous row, and returned as a view in
    (G, N, 2) order: numpy walks an axis of length 2 one call of its inner loop at a time, so
    arithmetic on this layout (here, and by callers, as ``PolygonSet`` does) runs faster.
    """
    coords = _rows("xyxy", xyxy, 4)  # (4, N)
    low = coords[:2]
    return (low + _fractions(tuple(anchors)) * (coords[2:] - low)).transpose(0, 2, 1)


@functools.cache
def _fractions(anchors: tuple[str, ...]) -> np.ndarray:
    """(G, 2, 1) fractions of the anchors, broadcast over the boxes."""
    unknown = [a for a in anchors if a not in ANCHOR_FRACTIONS]
    if unknown:
        raise ValueError(f"anchor must be one of {', '.join(ANCHOR_FRACTIONS)}, got {unknown[0]!r}")
    fractions = np.array([ANCHOR_FRACTIONS[a] for a in anchors], np.float64).reshape(-1, 2, 1)
    fractions.flags.writeable = False  # shared by every caller
    return fractions


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which ``points`` (N, 2) lie inside ``polygon`` (K, 2), K >= 3.

    The polygon is closed implicitly (the last vertex joins the first) and may be concave.
    **Points on an edge or a vertex count as inside** (within ``EDGE_TOLERANCE_PX``), so a zone
    is closed: an object standing exactly on a zone's border is in it, and two zones that share
    an edge both claim a point on it. Self-intersecting polygons follow the even-odd rule.

    How: a vectorised ray cast (the crossing-number test, as in W. Randolph Franklin's
    PNPOLY, https://wrfranklin.org/Research/Short_Notes/pnpoly.html): a ray from the point
    towards +x crosses the boundary an odd number of times iff the point is inside. Each edge
    is half-open in y (it counts for min(y1, y2) <= y < max(y1, y2)), so a ray through a
    vertex counts it once and a horizontal edge never. PNPOLY gives no fixed answer for points
    on the boundary, so those are found separately (near an edge's line and between its ends,
    or at a vertex) and counted in. This agrees with ``cv2.pointPolygonTest(contour, point,
    False) >= 0`` (tests/test_geometry.py compares them on a half-pixel grid); OpenCV is not
    used here because it takes one point per call, a Python loop over detections. For many
    polygons at once (zones, shelf slots) ``polygons.PolygonSet`` applies this same rule.
    """
    pts = _check("points", points, 2)
    poly = _check("polygon", polygon, 2)
    if len(poly) < 3:
        raise ValueError(f"polygon must have at least 3 vertices, but got {len(poly)}")
    px, py = pts[:, 0:1], pts[:, 1:2]  # (N, 1) against (K,) edges: (N, K)
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)

    straddles = (y1 > py) != (y2 > py)  # the edge spans the ray's y, half-open
    dy = np.broadcast_to(y2 - y1, straddles.shape)
    x_at_py = x1 + np.divide(
        (py - y1) * (x2 - x1), dy, out=np.zeros(straddles.shape), where=straddles
    )
    crossings = np.count_nonzero(straddles & (px < x_at_py), axis=1)

    # On an edge: near its line and between its ends (both scaled by the edge's length), or
    # at a vertex, which also covers zero-length edges (a repeated vertex) that have no line.
    ex, ey = x2 - x1, y2 - y1
    length = np.hypot(ex, ey)
    tol = EDGE_TOLERANCE_PX * length
    cross = ex * (py - y1) - ey * (px - x1)
    along = ex * (px - x1) + ey * (py - y1)
    on_segment = (
        (length > 0) & (np.abs(cross) <= tol) & (along >= -tol) & (along <= length * length + tol)
    )
    at_vertex = np.hypot(px - x1, py - y1) <= EDGE_TOLERANCE_PX
    on_edge = np.any(on_segment | at_vertex, axis=1)
    return on_edge | (crossings % 2 == 1)


def side_of_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) float64: the cross product (b - a) x (p - a) for every point p of ``points`` (N, 2).

    ``> 0``: p is left of the directed line a -> b, ``< 0``: right of it, ``0``: on the line
    (anywhere along it, not only between a and b). Left and right are the mathematical ones,
    with y up. Image y grows **downwards**, which mirrors them on screen: looking from a to b
    on the picture, a positive value is on your right-hand side. For example with a = (0, 0)
    and b = (10, 0), a horizontal line drawn left to right, the point (5, 3), below it on
    screen, gives +30. Counting a crossing only needs the sign to change, and the caller
    decides which side is "in", so this is the plain cross product, not flipped for images.
    Its magnitude is the distance from the line times |b - a|.
    """
    pts = _check("points", points, 2)
    start = np.asarray(a, dtype=np.float64)
    end = np.asarray(b, dtype=np.float64)
    if start.shape != (2,) or end.shape != (2,):
        raise ValueError(
            f"a and b must be points of shape (2,), but got shapes {start.shape} and {end.shape}"
        )
    dx, dy = end - start
    return dx * (pts[:, 1] - start[1]) - dy * (pts[:, 0] - start[0])
