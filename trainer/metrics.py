"""Quality metrics on plain predictions (numpy arrays, lists of dicts); never imports torch.

The same functions score a checkpoint run through torch and an exported bundle run through
edge_agent, so they take what either produces. Detection mAP is pycocotools' COCOeval, never a
re-implementation: its matching rules (crowd/ignore regions, 101-point interpolation, maxDets)
are what published numbers mean. Floats that have no value (a class without ground truth) are
NaN here and ``None`` in JSON.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Score threshold at which multilabel F1 is reported, unless the caller chooses another.
DEFAULT_THRESHOLD = 0.5
#: Scores are clipped this far inside (0, 1) before taking log-odds, so a saturated sigmoid
#: (float32 rounds 1 - 1e-8 to 1) still gives a finite midpoint.
LOGIT_EPS = 1e-7
#: A margin threshold is rounded to this many decimals when that keeps it inside its gap.
MARGIN_DECIMALS = 4
#: COCOeval's index of IoU 0.5 in iouThrs, of area range "all", and of maxDets 100.
IOU50, AREA_ALL, MAXDET_LAST = 0, 0, -1

Curve = dict[str, np.ndarray]  # "precision", "recall", "thresholds", same length


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must match, got shapes {y_true.shape}, {y_pred.shape}")
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def classification_metrics(
    y_true: np.ndarray, scores_or_pred: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``scores_or_pred`` is (N, C) scores (argmax is the prediction) or (N,) class indices.
    """
    pred = np.asarray(scores_or_pred)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    cm = confusion_matrix(y_true, pred, len(classes))
    per_class = {}
    for k, name in enumerate(classes):
        tp = cm[k, k]
        precision, recall = _ratio(tp, cm[:, k].sum()), _ratio(tp, cm[k].sum())
        per_class[name] = {"precision": precision, "recall": recall,
                           "f1": _f1(precision, recall), "support": int(cm[k].sum())}  # fmt: skip
    supported = [v["f1"] for v in per_class.values() if v["support"]]
    return {
        "accuracy": _ratio(np.trace(cm), cm.sum()),
        "macro_f1": float(np.mean(supported)) if supported else float("nan"),
        "images": int(cm.sum()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def pr_curve(is_positive: np.ndarray, scores: np.ndarray, positives: int | None = None) -> Curve:
    """Precision and recall when keeping every prediction scoring >= each distinct score.

    ``positives`` counts ground truths no prediction found (detection); default: the positives.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    hits = np.asarray(is_positive, bool)[order]
    ranked = np.asarray(scores, np.float64)[order]
    total = int(hits.sum()) if positives is None else positives
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    last = np.r_[ranked[1:] != ranked[:-1], True] if len(ranked) else np.zeros(0, bool)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / total if total else np.zeros_like(precision, dtype=np.float64)
    return {"precision": precision[last], "recall": recall[last], "thresholds": ranked[last]}


def best_f1_threshold(curve: Curve) -> dict[str, float | None]:
    """The score threshold with the highest F1 on ``curve`` (None when nothing is found)."""
    p, r = curve["precision"], curve["recall"]
    if not len(p) or not r.max(initial=0.0):
        return {"threshold": None, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return {"threshold": float(curve["thresholds"][i]), "f1": float(f1[i]),
            "precision": float(p[i]), "recall": float(r[i])}  # fmt: skip


def _logit(p: float) -> float:
    p = min(max(p, LOGIT_EPS), 1.0 - LOGIT_EPS)
    return float(np.log(p / (1.0 - p)))


def margin_threshold(curve: Curve, cut: float) -> float:
    """The threshold in the middle of the gap between ``cut`` and the next lower score.

    Every threshold in (next lower score, ``cut``] keeps the same images on ``curve``, so the
    same F1; ``cut`` itself is a sample's score, and on a small validation set the slightest
    shift (INT8 rounding, another runtime, a re-encoded JPEG) flips that sample and the images
    like it. The middle of the gap is as far from both neighbours as the evaluation allows. It
    is taken in log-odds, where a sigmoid's logits live and INT8 output rounding is even;
    rounded to MARGIN_DECIMALS when that stays inside the gap. No score below ``cut``: ``cut``.
    """
    scores = np.asarray(curve["thresholds"], np.float64)
    below = scores[scores < cut]
    if not below.size:
        return float(cut)
    lower = float(below.max())
    middle = float(1.0 / (1.0 + np.exp(-(_logit(cut) + _logit(lower)) / 2)))
    rounded = round(middle, MARGIN_DECIMALS)
    if lower < rounded <= cut:
        return rounded
    return middle if lower < middle <= cut else float(cut)


def top1_best_f1(
    y_true: np.ndarray, scores: np.ndarray, classes: list[str]
) -> dict[str, dict[str, float | None]]:
    """Best-F1 score threshold per class of a multiclass classifier, counted as the agent counts:
    class k is reported when it is the top-1 and its score reaches the threshold."""
    y_true, scores = np.asarray(y_true, np.int64), np.asarray(scores, np.float64)
    top = scores.argmax(axis=1) if len(scores) else np.zeros(0, np.int64)
    best = scores.max(axis=1) if len(scores) else np.zeros(0)
    out = {}
    for k, name in enumerate(classes):
        mine = top == k
        curve = pr_curve(y_true[mine] == k, best[mine], positives=int((y_true == k).sum()))
        out[name] = best_f1_threshold(curve)
    return out


def average_precision(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Ranking AP (sum of precision x recall increments, no interpolation), as scikit-learn."""
    curve = pr_curve(is_positive, scores)
    if not np.asarray(is_positive).any():
        return float("nan")
    steps = np.diff(np.r_[0.0, curve["recall"]])
    return float(np.sum(steps * curve["precision"]))


def multilabel_metrics(
    y_true: np.ndarray, scores: np.ndarray, classes: list[str],
    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
) -> tuple[dict[str, Any], dict[str, Curve]]:  # fmt: skip
    """Per-label AP, precision/recall/F1 at ``threshold`` (one for all, or one per label: a
    bundle's ``thresholds.per_class``), the best-F1 cut and its margin threshold; curves."""
    y_true, scores = np.asarray(y_true, bool), np.asarray(scores, np.float64)
    bars = np.broadcast_to(np.asarray(threshold, np.float64), (len(classes),))
    per_class, curves = {}, {}
    for k, name in enumerate(classes):
        truth, pred = y_true[:, k], scores[:, k] >= bars[k]
        tp = int((truth & pred).sum())
        precision, recall = _ratio(tp, pred.sum()), _ratio(tp, truth.sum())
        curves[name] = pr_curve(truth, scores[:, k])
        best = best_f1_threshold(curves[name])
        if best["threshold"] is not None:
            best["margin_threshold"] = margin_threshold(curves[name], best["threshold"])
        per_class[name] = {
            "ap": average_precision(truth, scores[:, k]), "precision": precision,
            "recall": recall, "f1": _f1(precision, recall), "support": int(truth.sum()),
            "threshold": float(bars[k]), "recommended": best,
        }  # fmt: skip
    aps = [v["ap"] for v in per_class.values() if v["support"]]
    f1s = [v["f1"] for v in per_class.values() if v["support"]]
    metrics = {
        "mAP": float(np.mean(aps)) if aps else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "threshold": float(threshold) if np.ndim(threshold) == 0
        else dict(zip(classes, bars.tolist(), strict=True)),
        "images": len(y_true), "per_class": per_class,
    }  # fmt: skip
    return metrics, curves


def _coco(images: list[dict], anns: list[dict], classes: list[str]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _annotations(items: list[dict], scored: bool) -> list[dict]:
    """COCO annotations (xywh) from per-image dicts of xyxy ``boxes`` and 0-based ``labels``."""
    anns = []
    for image_id, item in enumerate(items, start=1):
        boxes = np.asarray(item.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        labels = np.asarray(item.get("labels", []), np.int64)
        extra = item.get("scores" if scored else "ignore", np.zeros(len(boxes)))
        for (x1, y1, x2, y2), label, value in zip(boxes, labels, extra, strict=True):
            w, h = x2 - x1, y2 - y1
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(label) + 1,
                   "bbox": [x1, y1, w, h], "area": w * h}  # fmt: skip
            ann.update({"score": float(value), "iscrowd": 0} if scored
                       else {"iscrowd": int(bool(value))})  # fmt: skip
            anns.append(ann)
    return anns


def coco_evaluate(ground_truths: list[dict], predictions: list[dict], classes: list[str]) -> Any:
    """Run COCOeval (bbox) on per-image dicts; the evaluated COCOeval object.

    Ground truths: ``boxes`` (N, 4) xyxy, ``labels`` (N,) 0..C-1, optional ``ignore`` (N,) bool
    (VOC "difficult": a crowd region that neither counts nor penalises). Predictions: ``boxes``,
    ``scores``, ``labels``. Both lists are in the same image order.
    """
    from pycocotools.cocoeval import COCOeval

    if len(ground_truths) != len(predictions):
        raise ValueError(
            f"expected one prediction per image: {len(ground_truths)} images, "
            f"got {len(predictions)} predictions"
        )
    images = [{"id": i} for i in range(1, len(ground_truths) + 1)]
    gt = _coco(images, _annotations(ground_truths, scored=False), classes)
    dt = _coco(images, _annotations(predictions, scored=True), classes)
    ev = COCOeval(gt, dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _matched_curve(ev: Any, k: int) -> tuple[Curve, int]:
    """Exact (not interpolated) PR curve of class ``k`` at IoU 0.5 from COCOeval's matches."""
    n_img = len(ev.params.imgIds)
    start = k * len(ev.params.areaRng) * n_img + AREA_ALL * n_img
    entries = [e for e in ev.evalImgs[start : start + n_img] if e is not None]
    if not entries:
        return pr_curve(np.zeros(0, bool), np.zeros(0)), 0
    matches = np.concatenate([e["dtMatches"][IOU50] for e in entries])
    ignored = np.concatenate([e["dtIgnore"][IOU50] for e in entries]).astype(bool)
    scores = np.concatenate([e["dtScores"] for e in entries])
    positives = int(sum((e["gtIgnore"] == 0).sum() for e in entries))
    keep = ~ignored
    return pr_curve(matches[keep] > 0, scores[keep], positives), positives


def detection_metrics(
    ground_truths: list[dict], predictions: list[dict], classes: list[str]
) -> tuple[dict[str, Any], dict[str, Curve]]:
    """COCO mAP@[.5:.95], mAP@.5, per-class AP, and the best-F1 score threshold per class.

    Returns the metrics and, per class, the exact precision-recall curve at IoU 0.5.
    """
    ev = coco_evaluate(ground_truths, predictions, classes)
    precision = ev.eval["precision"]  # [IoU, recall, class, area, maxDets]
    per_class, curves = {}, {}
    for k, name in enumerate(classes):
        curve, positives = _matched_curve(ev, k)
        curves[name] = curve
        per_class[name] = {
            "ap": _mean_valid(precision[:, :, k, AREA_ALL, MAXDET_LAST]),
            "ap50": _mean_valid(precision[IOU50, :, k, AREA_ALL, MAXDET_LAST]),
            "ground_truths": positives, "recommended": best_f1_threshold(curve),
        }  # fmt: skip
    stats = [float(s) if s > -1 else float("nan") for s in ev.stats]
    metrics = {"mAP": stats[0], "mAP50": stats[1], "mAP75": stats[2], "images": len(ground_truths),
               "per_class": per_class}  # fmt: skip
    return metrics, curves


def json_safe(value: Any) -> Any:
    """NaN -> None and numpy scalars -> Python, recursively, for json.dumps."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
