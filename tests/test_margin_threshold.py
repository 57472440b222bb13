"""A multilabel label's shipped threshold: the middle of the gap below its best-F1 cut."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.bundle_writer import recommend_thresholds
from trainer.metrics import margin_threshold, multilabel_metrics, pr_curve

TRUTH = np.array([1, 1, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_the_middle_of_the_gap_in_log_odds_keeps_the_same_decisions() -> None:
    curve = pr_curve(TRUTH, SCORES)
    chosen = margin_threshold(curve, 0.6)  # best F1 keeps 0.9, 0.8, 0.7, 0.6: 6/7
    middle = 1 / (1 + math.exp(-(logit(0.6) + logit(0.3)) / 2))
    assert chosen == round(middle, 4) == 0.445
    assert 0.3 < chosen < 0.6
    assert ((SCORES >= chosen) == (SCORES >= 0.6)).all()  # the same F1 on these images


def test_a_gap_narrower_than_the_rounding_keeps_the_exact_middle() -> None:
    scores = np.array([0.50004, 0.50001])
    chosen = margin_threshold(pr_curve(np.array([1, 0]), scores), 0.50004)
    assert 0.50001 < chosen < 0.50004 and chosen != round(chosen, 4)


def test_no_score_below_the_cut_keeps_the_cut() -> None:
    assert margin_threshold(pr_curve(np.array([1, 1]), np.array([0.7, 0.4])), 0.4) == 0.4


def test_saturated_scores_still_give_a_threshold_inside_the_gap() -> None:
    scores = np.array([1.0, 1.0, 0.0])  # float32 sigmoid of +-20
    chosen = margin_threshold(pr_curve(np.array([1, 1, 0]), scores), 1.0)
    assert 0.0 < chosen < 1.0 and chosen == pytest.approx(0.5)


def test_multilabel_manifest_thresholds_are_the_margin_ones() -> None:
    truth = np.stack([TRUTH, 1 - TRUTH], axis=1)
    scores = np.stack([SCORES, 1 - SCORES], axis=1)
    metrics, _ = multilabel_metrics(truth, scores, ["a", "b"])
    labels = ["a", "b"]
    thresholds, recommended = recommend_thresholds("classify", True, metrics, scores, [], labels)
    assert recommended["a"]["threshold"] == pytest.approx(0.6)  # the best-F1 cut, reported
    assert thresholds["per_class"]["a"] == recommended["a"]["margin_threshold"] == 0.445
    # "b" (1 - score): positives 0.8, 0.7, 0.3, a negative 0.4: the best cut 0.3, then 0.2.
    b_cut = recommended["b"]["threshold"]
    assert thresholds["per_class"]["b"] == margin_threshold(pr_curve(1 - TRUTH, 1 - SCORES), b_cut)
    assert set(thresholds) == {"score", "per_class"}  # no NMS settings for a classifier


def test_per_label_thresholds_count_each_label_at_its_own() -> None:
    truth = np.array([[1, 0], [0, 1], [1, 1]])
    scores = np.array([[0.6, 0.2], [0.4, 0.9], [0.45, 0.5]])
    metrics, _ = multilabel_metrics(truth, scores, ["a", "b"], threshold=[0.42, 0.55])
    a, b = metrics["per_class"]["a"], metrics["per_class"]["b"]
    assert (a["threshold"], a["precision"], a["recall"]) == (0.42, 1.0, 1.0)
    assert (b["threshold"], b["precision"], b["recall"]) == (0.55, 1.0, 0.5)
    assert metrics["threshold"] == {"a": 0.42, "b": 0.55}
