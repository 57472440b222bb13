"""The INT8 gate: does the INT8 file decide what the FP32 file decides, at the thresholds the
bundle ships?

Why more than the headline metric: a user's multilabel INT8 file flipped 6 % of its label
decisions against FP32 and stayed within the mAP budget. mAP ranks scores, so it forgives a
shift that moves scores across their threshold; the device does not rank, it compares each
score with its class's threshold. And a mean hides a class: one class collapsing among ten
moves the mean by a few points. So the gate has three checks, each with its own budget:

- **mean**: the headline metric (accuracy, mAP, mAP@.5) may drop ``Budget.points``;
- **worst class**: no class may drop more than ``Budget.class_drop_points`` of its F1 at the
  shipped thresholds (classifiers: the device's decisions) or of its AP@.5 (detectors);
- **flips** (classifiers): at most ``Budget.flips_pct`` % of decisions may differ between FP32
  and INT8 at the shipped thresholds: per image the top-1 label after thresholding, "none"
  included (multiclass), or every (image, label) decision (multilabel).

Small validation sets get no extra tolerance. The gate says how much one image (or decision)
weighs, and when one weighs more than a budget it says the set is too small for that budget
to mean anything; the user decides with ``--allow-drop``. No torch here: plain arrays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.types import Classifications
from trainer.evaluate import SELECTION_METRIC

if TYPE_CHECKING:
    from trainer.parity import ArtifactEval

#: The most of the headline metric INT8 may lose, in points (1 point = 0.01).
BUDGET_POINTS = 2.0
#: The most any one class's F1 (classifiers) or AP@.5 (detectors) may lose, in points. Looser
#: than the mean's: a class's figure rests on its own images only and moves more (a class of
#: 20 images moves 5 recall points per image); a class that collapses loses tens of points.
MAX_CLASS_DROP_POINTS = 5.0
#: The most decisions INT8 may change against FP32, in % of decisions (1 in 100).
MAX_FLIPS_PCT = 1.0
#: How report.md and the CLI name each check.
CHECK_NAMES = {"mean": "overall", "worst_class": "worst class", "flips": "decision flips"}
#: Said when one image (or decision) weighs more than a budget: no tolerance is added for it.
TOO_SMALL = (
    "Too few validation images for this budget to tell quantization damage from one image's "
    "noise, and nothing was widened for it: read the per-class figures and the flips in "
    "report.md and decide (--allow-drop ships it), or score more images"
)
#: The multiclass decision when the top-1 score is below its class's threshold.
NO_LABEL = "(none)"


@dataclass(frozen=True)
class Budget:
    """What INT8 may lose against FP32; a negative value always fails (tests use it)."""

    points: float = BUDGET_POINTS
    class_drop_points: float = MAX_CLASS_DROP_POINTS
    flips_pct: float = MAX_FLIPS_PCT


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


def _mean_check(metric: str, fp32: dict, int8: dict, budget_points: float) -> dict[str, Any]:
    """A gain (a negative drop: calibration noise on small sets) counts as no loss."""
    a, b = fp32[metric], int8[metric]
    drop = (a - b) * 100 if a == a and b == b else 0.0  # NaN: nothing to rate
    return {"metric": metric, "fp32": a, "int8": b, "drop_points": drop,
            "budget_points": budget_points, "within": max(drop, 0.0) <= budget_points}  # fmt: skip


def _worst_class(figures: dict[str, dict], key: str, budget_points: float) -> dict[str, Any]:
    """The class that lost most of ``key``; classes without support (no images, no ground
    truth) are not rated."""
    drops = {
        name: (f["fp32"][key] - f["int8"][key]) * 100
        for name, f in figures.items()
        if f["support"] and f["fp32"][key] == f["fp32"][key] and f["int8"][key] == f["int8"][key]
    }
    worst = max(drops, key=lambda name: drops[name], default=None)
    drop = drops[worst] if worst is not None else 0.0
    return {
        "metric": key,
        "label": worst,
        "fp32": figures[worst]["fp32"][key] if worst is not None else None,
        "int8": figures[worst]["int8"][key] if worst is not None else None,
        "drop_points": drop,
        "budget_points": budget_points,
        "within": max(drop, 0.0) <= budget_points,
        "drops": drops,
    }


def _g(value: float) -> str:
    return f"{value:.3g}"


def resolution(
    task: str, multilabel: bool, images: int, figures: dict[str, dict],
    flips: dict[str, Any] | None, budget: Budget,
) -> dict[str, Any]:  # fmt: skip
    """How much one image (or decision) weighs in each check, and the checks whose budget is
    smaller than that (the set is too small for them): sentences for people, figures for JSON."""
    out: dict[str, Any] = {"images": images, "notes": [], "too_small": []}
    if images and task == "classify" and not multilabel:
        out["image_points"] = 100.0 / images
        out["notes"].append(f"1 image = {_g(100 / images)} points of accuracy on {images} images")
        if 0 <= budget.points < 100 / images:
            out["too_small"].append(
                f"one image ({_g(100 / images)} accuracy points) is more than the mean budget "
                f"of {budget.points:g} points"
            )
    if flips and flips["decisions"]:
        one = 100.0 / flips["decisions"]
        out["decision_pct"] = one
        out["notes"].append(f"1 decision = {_g(one)} % of {flips['decisions']} decisions")
        if 0 <= budget.flips_pct < one:
            out["too_small"].append(
                f"one flipped decision ({_g(one)} %) is more than the flip budget of "
                f"{budget.flips_pct:g} %: any flip fails"
            )
    rated = {name: f["support"] for name, f in figures.items() if f["support"]}
    if rated:
        name = min(rated, key=lambda k: rated[k])
        one, what = 100.0 / rated[name], "objects" if task == "detect" else "images"
        out["smallest_class"] = {"label": name, "support": rated[name], "recall_points": one}
        out["notes"].append(
            f"smallest class '{name}': {rated[name]} {what}, "
            f"1 {what[:-1]} = {_g(one)} points of its recall"
        )
        if 0 <= budget.class_drop_points < one:
            out["too_small"].append(
                f"one {what[:-1]} of '{name}' ({_g(one)} recall points) is more than the "
                f"per-class budget of {budget.class_drop_points:g} points"
            )
    out["lines"] = ["; ".join(out["notes"])] if out["notes"] else []
    if out["too_small"]:
        out["lines"].append(f"too small to judge: {'; '.join(out['too_small'])}. {TOO_SMALL}")
    return out


def describe(name: str, check: dict[str, Any]) -> str:
    """One sentence for a check, shared by the CLI, report.md and the exit-3 message."""
    verdict = "within" if check["within"] else "OVER"
    if name == "flips":
        shown = ", ".join(f"{k} x{n}" for k, n in list(check["changes"].items())[:5])
        return (
            f"decision flips: {check['flipped']} of {check['decisions']} ({check['pct']:.2f} %, "
            f"budget {check['budget_pct']:g} %): {verdict}" + (f" ({shown})" if shown else "")
        )
    figure = f"{check['metric']} {_fmt(check['fp32'])} -> {_fmt(check['int8'])}"
    if name == "worst_class":
        if check["label"] is None:
            return f"worst class: no class could be rated on {check['metric']}"
        figure = f"'{check['label']}' {figure}"
    return (
        f"{CHECK_NAMES[name]}: {figure}, drop {check['drop_points']:.2f} points "
        f"(budget {check['budget_points']:g}): {verdict}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def int8_gate(
    task: str,
    multilabel: bool,
    labels: list[str],
    fp32: ArtifactEval,
    int8: ArtifactEval,
    truth: np.ndarray | None,
    thresholds: dict[str, Any],
    budget: Budget,
    images: int,
) -> dict[str, Any]:
    """Rate INT8 against FP32 on the three checks; ``within`` only when all three hold.

    ``truth`` is trainer.evaluate.truths' (class indices or multi-hot rows; None for detectors),
    ``thresholds`` the manifest's block the bundle ships. The top-level ``metric``, ``fp32``,
    ``int8``, ``drop_points`` and ``budget_points`` are the mean check's.
    """
    figures = per_class_figures(
        task, multilabel, labels, {"fp32": fp32, "int8": int8}, truth, thresholds
    )
    mean = _mean_check(SELECTION_METRIC[(task, multilabel)], fp32.metrics, int8.metrics,
                       budget.points)  # fmt: skip
    worst = _worst_class(figures, "ap50" if task == "detect" else "f1", budget.class_drop_points)
    flips = None
    if task == "classify":
        bars = class_thresholds(labels, thresholds)
        flips = decision_flips(
            decide(fp32.predictions, bars, multilabel),
            decide(int8.predictions, bars, multilabel),
            labels,
            multilabel,
            budget.flips_pct,
        )
    checks = {"mean": mean, "worst_class": worst, "flips": flips}
    for name, check in checks.items():
        if check is not None:
            check["text"] = describe(name, check)
    failed = [name for name, check in checks.items() if check is not None and not check["within"]]
    return {
        **{k: mean[k] for k in ("metric", "fp32", "int8", "drop_points", "budget_points")},
        "within": not failed,
        "failed": failed,
        **checks,
        "resolution": resolution(task, multilabel, images, figures, flips, budget),
    }


def over_budget_message(budget: dict[str, Any], report_md: str) -> str:
    """Exit 3's message: each check that failed, how much one image weighs, what to do."""
    lines = ["INT8 is over its budget:", *(budget[name]["text"] for name in budget["failed"])]
    lines += budget["resolution"]["lines"]
    lines.append(f"see {report_md}, or pass --allow-drop")
    return "\n  ".join(lines)
