"""Which tracks had their ids swapped by the tracker (lines.py's module docstring, "Id
switches"): when two objects pass each other each id may jump to where the other object was.
A pair is swapped when each one's new position is where the *other* was heading (by their
last velocities), much better than where it was heading itself."""

from __future__ import annotations

import numpy as np

#: Each id moved at least this far (normalised) from where its velocity said, and the
#: exchanged ids explain the motion at least this much better (cost ratio).
SWAP_MIN_JUMP = 0.01
SWAP_GAIN = 0.5


def off_course(centre: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(k,) bool: the tracks whose ``centre`` (k, 2) is more than ``SWAP_MIN_JUMP`` from where
    they were ``predicted`` to be; only those can have swapped."""
    miss = centre - predicted
    return np.einsum("ij,ij->i", miss, miss) > SWAP_MIN_JUMP**2


def swapped_pairs(
    centre: np.ndarray, predicted: np.ndarray, candidates: np.ndarray
) -> list[tuple[int, int]]:
    """Pairs (i, j) of ``candidates`` (indices into ``centre`` and ``predicted``, (k, 2) each)
    whose ids the tracker swapped, best explained first, each track in one pair at most."""
    if len(candidates) < 2:
        return []
    here, pred = centre[candidates], predicted[candidates]
    miss = here - pred
    jump = np.sqrt(np.einsum("ij,ij->i", miss, miss))
    cross = np.hypot(here[:, 0:1] - pred[:, 0], here[:, 1:2] - pred[:, 1])  # [i, j]
    ratio = (cross + cross.T) / (jump[:, None] + jump[None, :])
    # Only pairs under SWAP_GAIN can be taken, usually none, so only those are sorted (by
    # score, then indices) in Python; ratio is symmetric, so each pair is taken as i < j.
    below = ratio < SWAP_GAIN
    if not np.count_nonzero(below):
        return []
    first, second = below.nonzero()
    scores = ratio[first, second].tolist()
    pairs = sorted(zip(scores, first.tolist(), second.tolist(), strict=True))
    used: set[int] = set()
    found: list[tuple[int, int]] = []
    for _, i, j in pairs:
        if i < j and i not in used and j not in used:
            used.update((i, j))
            found.append((int(candidates[i]), int(candidates[j])))
    return found
