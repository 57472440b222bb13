"""The device's decisions at the shipped thresholds, and the per-class figures the INT8 gate
(trainer.int8_gate) and report.md compare: plain arrays, no torch.

A device does not rank scores, it compares each with its class's threshold, so these figures
are taken at the thresholds the bundle ships, by the agent's own rule
(``Classifications.decided``), not at a threshold of the evaluation's choosing.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.types import Classifications

if TYPE_CHECKING:
    from trainer.parity import ArtifactEval

#: The multiclass decision when the top-1 score is below its class's threshold.
NO_LABEL = "(none)"


def class_thresholds(labels: list[str], thresholds: dict[str, Any]) -> np.ndarray:
    """The manifest's thresholds per class index, as the agent reads them (per_class, else
    score), in float32 as its decoders compare them."""
    per_class = thresholds.get("per_class") or {}
    return np.array([per_class.get(k, thresholds["score"]) for k in labels], np.float32)


def decide(scores: np.ndarray, bars: np.ndarray, multilabel: bool) -> np.ndarray:
    """The device's decisions, by the device's own rule (``Classifications.decided``, which
    the counts stage and serve use): multilabel (N, C) bool; multiclass (N,) the class index
    decided, or -1 (no label)."""
    scores = np.asarray(scores, np.float32).reshape(len(scores), len(bars))
    decided = np.stack(
        [Classifications(row, multilabel=multilabel).decided(bars) for row in scores]
    ).reshape(len(scores), len(bars))
    if multilabel:
        return decided
    return np.where(decided.any(axis=1), decided.argmax(axis=1), -1)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def decision_metrics(
    decisions: np.ndarray, truth: np.ndarray, labels: list[str], multilabel: bool
) -> dict[str, dict[str, Any]]:
    """Per-class precision, recall, F1 and support of decisions (see ``decide``)."""
    out = {}
    for k, name in enumerate(labels):
        if multilabel:
            pred, true = decisions[:, k].astype(bool), np.asarray(truth)[:, k].astype(bool)
        else:
            pred, true = decisions == k, np.asarray(truth) == k
        tp = int((pred & true).sum())
        precision, recall = _ratio(tp, pred.sum()), _ratio(tp, true.sum())
        f1 = _ratio(2 * precision * recall, precision + recall)
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(true.sum())}
    return out


def per_class_figures(
    task: str,
    multilabel: bool,
    labels: list[str],
    artifacts: dict[str, ArtifactEval],
    truth: np.ndarray | None,
    thresholds: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """{label: {"support", "threshold", artifact: figures}}: classifiers' precision, recall and
    F1 of the decisions at ``thresholds`` (plus AP for multilabel), detectors' AP@.5 and AP."""
    bars = class_thresholds(labels, thresholds)
    per_class = thresholds.get("per_class") or {}
    out: dict[str, dict[str, Any]] = {
        name: {"threshold": per_class.get(name, thresholds["score"])} for name in labels
    }
    for art_name, art in artifacts.items():
        per = art.metrics["per_class"]
        if task == "detect":
            for name in labels:
                out[name]["support"] = per[name]["ground_truths"]
                out[name][art_name] = {"ap50": per[name]["ap50"], "ap": per[name]["ap"]}
            continue
        assert truth is not None, "classifier figures need the ground truth"
        decided = decision_metrics(
            decide(art.predictions, bars, multilabel), truth, labels, multilabel
        )
        for name in labels:
            out[name]["support"] = decided[name].pop("support")
            out[name][art_name] = decided[name]
            if multilabel:
                out[name][art_name]["ap"] = per[name]["ap"]
    return out


def decision_flips(
    fp32: np.ndarray, int8: np.ndarray, labels: list[str], multilabel: bool, budget_pct: float
) -> dict[str, Any]:
    """How many decisions INT8 changed, per class, and which changes ("a -> b" FP32 -> INT8
    for multiclass, "a: yes -> no" for multilabel), most frequent first."""
    changed = fp32 != int8
    changes: Counter[str] = Counter()
    per_class = dict.fromkeys(labels, 0)
    if multilabel:
        for k, name in enumerate(labels):
            lost = int((fp32[:, k] & ~int8[:, k]).sum())
            gained = int((~fp32[:, k] & int8[:, k]).sum())
            per_class[name] = lost + gained
            changes.update({f"{name}: yes -> no": lost, f"{name}: no -> yes": gained})
    else:
        named = [*labels, NO_LABEL]  # index -1 is the last: no label
        for a, b in zip(fp32[changed], int8[changed], strict=True):
            changes[f"{named[a]} -> {named[b]}"] += 1
            for k in {int(a), int(b)} - {-1}:
                per_class[labels[k]] += 1
    flipped, decisions = int(changed.sum()), int(changed.size)
    pct = 100.0 * flipped / decisions if decisions else 0.0
    return {
        "decisions": decisions,
        "flipped": flipped,
        "pct": pct,
        "budget_pct": budget_pct,
        "within": pct <= budget_pct,
        "per_class": per_class,
        "changes": {k: n for k, n in changes.most_common() if n},
    }
