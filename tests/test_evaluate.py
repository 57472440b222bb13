"""trainer.metrics on hand-made predictions whose numbers are known, and detection mAP equal to
pycocotools' own figure computed directly on the same data (loadRes path, not ours)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from trainer.metrics import (
    average_precision,
    best_f1_threshold,
    classification_metrics,
    confusion_matrix,
    detection_metrics,
    json_safe,
    multilabel_metrics,
    pr_curve,
)

CLASSES = ["can", "bottle", "box"]


def make_gt(boxes, labels, ignore=None) -> dict:
    """One image's ground truth in trainer.metrics' shape."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = {"boxes": boxes, "labels": np.asarray(labels, np.int64)}
    if ignore is not None:
        out["ignore"] = np.asarray(ignore, bool)
    return out


def make_pred(boxes, labels, scores) -> dict:
    return {
        "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "scores": np.asarray(scores, np.float64),
    }


def scene_gts(seed: int = 0, images: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(images):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(15, 80, (n, 2))
        out.append(make_gt(np.hstack([xy, xy + wh]), rng.integers(0, len(CLASSES), n)))
    return out


def pycocotools_direct(gts: list[dict], preds: list[dict]) -> np.ndarray:
    """COCOeval stats computed the documented way: a GT json dict and ``loadRes`` on a list."""
    images = [{"id": i + 1, "width": 640, "height": 480} for i in range(len(gts))]
    anns = []
    for i, g in enumerate(gts):
        for (x1, y1, x2, y2), label in zip(g["boxes"], g["labels"], strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})  # fmt: skip
    results = [{"image_id": i + 1, "category_id": int(label) + 1, "score": float(s),
                "bbox": [x1, y1, x2 - x1, y2 - y1]}
               for i, p in enumerate(preds)
               for (x1, y1, x2, y2), label, s in zip(p["boxes"], p["labels"], p["scores"],
                                                    strict=True)]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_predictions_score_one():
    gts = scene_gts()
    preds = [make_pred(g["boxes"], g["labels"], np.ones(len(g["labels"]))) for g in gts]
    metrics, curves = detection_metrics(gts, preds, CLASSES)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP50"] == pytest.approx(1.0)
    for name in CLASSES:
        assert metrics["per_class"][name]["ap50"] == pytest.approx(1.0)
        assert curves[name]["recall"][-1] == pytest.approx(1.0)


def test_one_class_never_predicted_halves_the_map():
    gts = [make_gt([[0, 0, 50, 50], [60, 60, 120, 140]], [0, 1]),
           make_gt([[10, 10, 40, 30]], [0])]  # fmt: skip
    preds = [make_pred([[0, 0, 50, 50]], [0], [0.9]), make_pred([[10, 10, 40, 30]], [0], [0.8])]
    metrics, _ = detection_metrics(gts, preds, CLASSES[:2])
    assert metrics["mAP50"] == pytest.approx(0.5) and metrics["mAP"] == pytest.approx(0.5)
    assert metrics["per_class"]["bottle"]["ap"] == 0.0
    assert metrics["per_class"]["bottle"]["recommended"]["threshold"] is None
    stats = pycocotools_direct(gts, preds)
    assert metrics["mAP"] == pytest.approx(stats[0]) and metrics["mAP50"] == pytest.approx(stats[1])


def test_noisy_predictions_equal_pycocotools_direct():
    rng = np.random.default_rng(7)
    gts = scene_gts(seed=1, images=8)
    preds = []
    for g in gts:
        boxes = g["boxes"] + rng.normal(0, 6, g["boxes"].shape)  # loose boxes: AP varies by IoU
        labels = np.where(rng.random(len(boxes)) < 0.2, (g["labels"] + 1) % 3, g["labels"])
        junk = rng.uniform(0, 200, (2, 2))
        preds.append(make_pred(np.vstack([boxes, np.hstack([junk, junk + 30])]),
                               np.r_[labels, rng.integers(0, 3, 2)],
                               rng.uniform(0.05, 1.0, len(boxes) + 2)))  # fmt: skip
    metrics, _ = detection_metrics(gts, preds, CLASSES)
    stats = pycocotools_direct(gts, preds)
    assert 0.1 < metrics["mAP"] < 0.9
    assert metrics["mAP"] == pytest.approx(stats[0], abs=1e-12)
    assert metrics["mAP50"] == pytest.approx(stats[1], abs=1e-12)
    assert metrics["mAP75"] == pytest.approx(stats[2], abs=1e-12)


def test_ignored_ground_truth_neither_counts_nor_penalises():
    gts = [make_gt([[0, 0, 50, 50], [100, 100, 150, 150]], [0, 0], ignore=[False, True])]
    preds = [make_pred([[0, 0, 50, 50], [100, 100, 150, 150]], [0, 0], [0.9, 0.95])]
    metrics, _ = detection_metrics(gts, preds, CLASSES[:1])
    assert metrics["mAP50"] == pytest.approx(1.0)
    assert metrics["per_class"]["can"]["ground_truths"] == 1


def test_no_predictions_at_all_is_zero_not_an_error():
    metrics, _ = detection_metrics(scene_gts(images=2), [{}, {}], CLASSES)
    assert metrics["mAP50"] == 0.0


def test_detection_recommended_threshold_is_the_best_f1_score():
    # can: TPs at 0.9 and 0.6, a false positive at 0.7, a TP at 0.4 then FP at 0.3 and 0.2.
    gt_boxes = [[0, 0, 40, 40], [50, 0, 90, 40], [100, 0, 140, 40]]
    gts = [make_gt(gt_boxes, [0, 0, 0])]
    fp = [[0, 100, 40, 140], [50, 100, 90, 140], [100, 100, 140, 140]]
    preds = [make_pred(gt_boxes + fp, [0] * 6, [0.9, 0.6, 0.4, 0.7, 0.3, 0.2])]
    best = detection_metrics(gts, preds, CLASSES[:1])[0]["per_class"]["can"]["recommended"]
    # At 0.4: P 3/4, R 1 -> F1 0.857; at 0.9: P 1, R 1/3 -> 0.5; at 0.6: P 2/3, R 2/3.
    assert best["threshold"] == pytest.approx(0.4)
    assert best["f1"] == pytest.approx(6 / 7) and best["recall"] == 1.0


def test_confusion_matrix_counts():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [1, 0, 3]])
    m = classification_metrics(y_true, y_pred, CLASSES)
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["per_class"]["can"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["box"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["bottle"]["support"] == 2
    scores = np.eye(3)[y_pred] * 0.8 + 0.1  # argmax gives the same predictions
    assert classification_metrics(y_true, scores, CLASSES)["confusion_matrix"] == cm.tolist()


def test_multilabel_ap_f1_and_threshold_on_a_constructed_case():
    truth = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    assert average_precision(truth, scores) == pytest.approx((1 + 1 + 0.75) / 3)
    best = best_f1_threshold(pr_curve(truth, scores))
    assert best["threshold"] == pytest.approx(0.6) and best["f1"] == pytest.approx(6 / 7)
    y = np.stack([truth, 1 - truth], axis=1)
    s = np.stack([scores, 1 - scores], axis=1)
    m, curves = multilabel_metrics(y, s, ["a", "b"], threshold=0.65)
    # "a" at 0.65 keeps 0.9, 0.8, 0.7: P 2/3, R 2/3.
    assert m["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["recommended"]["threshold"] == pytest.approx(0.6)
    assert set(curves) == {"a", "b"}


def test_ties_count_together_in_the_curve():
    curve = pr_curve(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.2]))
    np.testing.assert_allclose(curve["thresholds"], [0.5, 0.2])
    np.testing.assert_allclose(curve["precision"], [0.5, 2 / 3])


def test_report_is_plain_json():
    metrics, _ = detection_metrics([make_gt([[0, 0, 9, 9]], [0])], [{}], CLASSES)
    text = json.dumps(json_safe(metrics), allow_nan=False)
    assert json.loads(text)["per_class"]["bottle"]["ap"] is None  # no ground truth: no AP


def test_metrics_never_import_torch():
    probe = "import sys, trainer.metrics, trainer.plots; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _report(task: str, metrics: dict, multilabel: bool = False) -> dict:
    """The parts of an ``edgesight.eval/1`` report that ``summary`` reads."""
    return json_safe({"task": task, "multilabel": multilabel, "images": "val", "metrics": metrics})


def test_summary_prints_the_headline_once_and_a_row_per_class(tmp_path):
    from trainer.evaluate import summary

    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    metrics = classification_metrics(y_true, y_pred, CLASSES)
    lines = summary(_report("classify", metrics), tmp_path / "report.json")
    assert lines[0] == (
        f"accuracy 0.667, macro F1 0.639 on 9 images (val) -> {tmp_path / 'report.json'}"
    )
    assert lines[1].split() == ["class", "precision", "recall", "F1", "support"]
    # can: P 2/3, R 2/3; bottle: P 1/2, R 1/2; box: P 3/4, R 3/4.
    assert [line.split() for line in lines[2:]] == [
        ["can", "0.667", "0.667", "0.667", "3"],
        ["bottle", "0.500", "0.500", "0.500", "2"],
        ["box", "0.750", "0.750", "0.750", "4"],
    ]
    assert sum("accuracy" in line for line in lines) == 1


def test_summary_gives_detectors_ap_per_class(tmp_path):
    from trainer.evaluate import summary

    gts = [make_gt([[0, 0, 50, 50], [60, 60, 120, 120]], [0, 1])]
    preds = [make_pred([[0, 0, 50, 50]], [0], [0.9])]  # bottle missed, box has no ground truth
    metrics, _ = detection_metrics(gts, preds, CLASSES)
    lines = summary(_report("detect", metrics), tmp_path / "report.json")
    assert lines[0].startswith("mAP@.5 0.500, mAP@[.5:.95] 0.500 on 1 images")
    assert lines[1].split() == ["class", "AP@.5", "AP@[.5:.95]", "boxes"]
    assert [line.split() for line in lines[2:]] == [
        ["can", "1.000", "1.000", "1"],
        ["bottle", "0.000", "0.000", "1"],
        ["box", "n/a", "n/a", "0"],
    ]


def test_summary_gives_multilabel_ap_and_f1_per_label(tmp_path):
    from trainer.evaluate import summary

    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6], [0.1, 0.4]])
    metrics, _ = multilabel_metrics(truth, scores, ["a", "b"], threshold=0.5)
    lines = summary(_report("classify", metrics, multilabel=True), tmp_path / "r.json")
    assert lines[0].startswith("mAP 1.000, macro F1 1.000 at 0.5 on 4 images")
    assert lines[1].split() == ["class", "AP", "precision", "recall", "F1", "support"]
    assert [line.split()[0] for line in lines[2:]] == ["a", "b"]
