"""The tracker's assignment: the shortcut that skips the solver when the answer is plain must
give exactly the solver's pairs, ties and near-ties included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from edge_agent.analytics.association import _obvious, match


def solver_pairs(iou: np.ndarray, min_iou: float) -> set[tuple[int, int]]:
    if 0 in iou.shape:
        return set()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] >= min_iou
    return set(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))


def matrices(rng: np.random.Generator, trials: int):
    for trial in range(trials):
        t, n = rng.integers(0, 7, 2)
        kind = trial % 4
        if kind == 0:  # sparse overlaps, as people apart
            iou = rng.random((t, n)) * (rng.random((t, n)) < 0.4)
        elif kind == 1:  # coarse values: many exact ties
            iou = rng.integers(0, 4, (t, n)) / 4.0
        elif kind == 2:  # rounded and sparse: ties between overlapping entries
            iou = np.round(rng.random((t, n)), 1) * (rng.random((t, n)) < 0.3)
        else:  # skewed towards 0
            iou = rng.random((t, n)) ** 4
        yield iou, [0.2, 0.5, 1e-6][trial % 3]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_shortcut_gives_the_solvers_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    took_shortcut = 0
    for iou, min_iou in matrices(rng, 20_000):
        rows, cols = match(iou, min_iou)
        got = set(zip(rows.tolist(), cols.tolist(), strict=True))
        assert got == solver_pairs(iou, min_iou), (iou, min_iou)
        took_shortcut += 0 not in iou.shape and _obvious(iou) is not None
    assert took_shortcut > 2_000  # the shortcut is exercised, not only the solver


def test_ties_go_to_the_solver() -> None:
    tie = np.array([[0.5, 0.5], [0.0, 0.4]])
    assert _obvious(tie) is None  # row 0 has two best columns
    shared = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert _obvious(shared) is None  # both rows want column 0
    rows, cols = match(shared, 0.1)
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == {(0, 0), (1, 1)}
