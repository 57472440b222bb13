"""Which detection belongs to which track: one optimal assignment on IoU per matching stage.

The tracker computes one IoU matrix per frame (tracks x detections) and runs each of its
stages on a sub-block of it; this module is the maths of one stage, free of track state.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_EMPTY = np.zeros(0, np.intp)


def match(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(rows, cols)`` of ``iou`` (T, N) that maximise the summed IoU, each row and
    column used at most once, keeping only pairs with IoU >= ``min_iou``.

    Solved exactly (scipy's ``linear_sum_assignment``, a Jonker-Volgenant variant) rather
    than greedily: with two people side by side, greedy best-first can hand the first track
    its neighbour's box and leave the neighbour with nothing. Pairs below ``min_iou`` add
    nothing worth having, so dropping them after solving gives the same pairs as solving
    with them forbidden.
    """
    if iou.shape[0] == 0 or iou.shape[1] == 0:
        return _EMPTY, _EMPTY
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] >= min_iou
    return rows[keep], cols[keep]


def match_stage(
    iou: np.ndarray,
    track_rows: np.ndarray,
    det_cols: np.ndarray,
    min_iou: float,
    det_track: np.ndarray,
) -> None:
    """One stage of the cascade: match the tracks ``track_rows`` with the detections
    ``det_cols`` on their block of ``iou``, writing each matched detection's track row into
    ``det_track`` (in place; -1 stays for unmatched)."""
    if len(track_rows) == 0 or len(det_cols) == 0:
        return
    rows, cols = match(iou[track_rows][:, det_cols], min_iou)
    det_track[det_cols[cols]] = track_rows[rows]
