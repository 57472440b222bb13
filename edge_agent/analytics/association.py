"""Which detection belongs to which track: one optimal assignment on IoU per matching stage.

The tracker computes one IoU matrix per frame (tracks x detections) and runs each of its
stages on a sub-block of it; this module is the maths of one stage, free of track state.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_EMPTY = np.zeros(0, np.intp)
#: How much a row's best IoU must beat every other entry of the row for the plain answer to
#: be taken (``_obvious``): far above float rounding (1e-16), so the assignment solver, which
#: adds and compares sums, could not pick another answer through rounding either.
OBVIOUS_MARGIN = 1e-9


def _obvious(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The optimal assignment when it needs no solver, else None.

    With no more rows than columns every row is assigned, so no assignment sums more than the
    rows' maxima. When each row that overlaps anything has one clear best column and no two of
    them share it, giving every such row its best column reaches that bound, and any other
    choice for one of them sums less: it is the one optimal assignment, the solver's answer
    (rows without overlap add 0 wherever they go, and ``match`` drops such pairs). With more
    rows than columns the same holds for columns. At 50 people walking by, about 98 % of
    frames are such (bench/bench_analytics.py), and this costs 8 us where the solver costs 14.
    """
    wide = iou.shape[0] <= iou.shape[1]
    m = iou if wide else iou.T
    best = m.argmax(axis=1)
    top = m[np.arange(len(m)), best]
    overlapping = top > 0.0
    # Each overlapping row has exactly one entry within the margin of its best (the best):
    # counted over the whole matrix at once, rows without overlap taking no part.
    close_to_best = np.where(overlapping, top - OBVIOUS_MARGIN, np.inf)
    rows = overlapping.nonzero()[0]
    if np.count_nonzero(m >= close_to_best[:, np.newaxis]) > len(rows):
        return None
    cols = best[rows]
    if len(cols) > 1 and np.bincount(cols).max() > 1:
        return None
    return (rows, cols) if wide else (cols, rows)


def match(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(rows, cols)`` of ``iou`` (T, N) that maximise the summed IoU, each row and
    column used at most once, keeping only pairs with IoU >= ``min_iou``.

    Solved exactly (scipy's ``linear_sum_assignment``, a Jonker-Volgenant variant) rather
    than greedily: with two people side by side, greedy best-first can hand the first track
    its neighbour's box and leave the neighbour with nothing. Pairs below ``min_iou`` add
    nothing worth having, so dropping them after solving gives the same pairs as solving
    with them forbidden. When the answer is plain (``_obvious``) the solver is skipped.
    """
    if iou.shape[0] == 0 or iou.shape[1] == 0:
        return _EMPTY, _EMPTY
    pairs = _obvious(iou)
    rows, cols = pairs if pairs is not None else linear_sum_assignment(iou, maximize=True)
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
    ``det_cols`` (each in increasing order, as ``nonzero`` gives them) on their block of
    ``iou``, writing each matched detection's track row into ``det_track`` (in place; -1 stays
    for unmatched)."""
    if len(track_rows) == 0 or len(det_cols) == 0:
        return
    whole = len(track_rows) == iou.shape[0] and len(det_cols) == iou.shape[1]
    rows, cols = match(iou if whole else iou[track_rows][:, det_cols], min_iou)
    det_track[det_cols[cols]] = track_rows[rows]
