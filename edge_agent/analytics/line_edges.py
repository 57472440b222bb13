"""Counting lines near the frame edge (lines.py's module docstring, "Frame edges"): which
lines' bands do not fit inside the frame, which frame borders reach which side of them, and
clipped boxes extended back to their whole size. All in normalised frame coordinates."""

from __future__ import annotations

import numpy as np

#: A box side this close to the frame border (fraction of the frame) is clipped by it.
EDGE_MARGIN = 0.005
#: The frame's corners and each border's two of them: left, top, right, bottom (y down).
CORNERS = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
BORDER_CORNERS = ((0, 3), (0, 1), (1, 2), (2, 3))


def _room(points: np.ndarray, direction: np.ndarray) -> float:
    """How far one can go from any of ``points`` along ``direction`` inside the unit square."""
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.where(direction > 0, (1 - points) / direction, -points / direction)
    return float(np.where(direction != 0, steps, np.inf).min())


def extend_clipped(
    boxes: np.ndarray, known: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ``boxes`` (k, 4) with a side clipped by the frame border (``low``: at the
    left/top border, ``high``: right/bottom, each (k, 2)) extended back to the track's
    ``known`` (width, height) from when it was not clipped (0: never seen whole), so a box
    leaving the frame keeps moving at its true speed instead of shrinking against the edge.
    Returns the boxes and the known sizes after this frame."""
    seen = boxes[:, 2:] - boxes[:, :2]
    grow = np.maximum(known - seen, 0)
    whole = boxes.copy()
    whole[:, 2:] += grow * (high > low)  # clipped on the high side only
    whole[:, :2] -= grow * (low > high)
    return whole, np.where(low | high, known, seen)


def clipped_bands(a: np.ndarray, b: np.ndarray, normal: np.ndarray, band: np.ndarray) -> np.ndarray:
    """(lines, 2) bool: the band on side s (column 0: -1, 1: +1) of each line from ``a`` to
    ``b`` (each (lines, 2), ``normal`` pointing to side +1) does not fit inside the frame."""
    return np.array(
        [
            [_room(np.stack([start, end]), s * n) <= width + EDGE_MARGIN for s in (-1, 1)]
            for start, end, n, width in zip(a, b, normal, band, strict=True)
        ]
    ).reshape(len(a), 2)


def edge_borders(normal: np.ndarray, offset: np.ndarray, clipped: np.ndarray) -> list[np.ndarray]:
    """For side -1 and side +1, a (4 borders, lines) bool: the border (left, top, right,
    bottom) reaches that side of the line, and that side's band does not fit in the frame, so
    a box touching the border counts as beyond the band there. A line's signed distance is
    ``p . normal - offset``."""
    corner_side = np.sign(CORNERS @ normal.T - offset)  # (4 corners, lines)
    return [
        np.array([(corner_side[list(e)] == s).any(0) for e in BORDER_CORNERS]) & clipped[:, k]
        for k, s in ((0, -1), (1, 1))
    ]
