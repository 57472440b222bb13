"""The INT8 gate on hand-made FP32 / INT8 scores and boxes: decisions at the shipped thresholds,
the worst class, detectors' mAP@.5, mAP@[.5:.95] and mAP@.75, and what one image weighs. No
torch, no export: trainer.int8_gate takes plain arrays and COCO metric dicts."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import bundle_writer as bw
from trainer import report as report_sections
from trainer.int8_gate import (
    MAP75_BUDGET_POINTS,
    MAP_BUDGET_POINTS,
    MAX_CLASS_DROP_POINTS,
    MAX_FLIPS_PCT,
    Budget,
    class_thresholds,
    decide,
    int8_gate,
    over_budget_message,
)
from trainer.metrics import classification_metrics, detection_metrics, multilabel_metrics
from trainer.parity import ArtifactEval


def _art(
    scores: np.ndarray, truth: np.ndarray, labels: list[str], multilabel: bool
) -> ArtifactEval:
    """An ArtifactEval as trainer.parity makes one, from scores alone."""
    if multilabel:
        metrics, curves = multilabel_metrics(truth, scores, labels)
    else:
        metrics, curves = classification_metrics(truth, scores, labels), {}
    return ArtifactEval(metrics, curves, scores, 1.0)


def _gate(fp32, int8, truth, labels, multilabel, thresholds, budget=Budget()) -> dict:  # noqa: B008
    return int8_gate(
        "classify", multilabel, labels,
        _art(fp32, truth, labels, multilabel), _art(int8, truth, labels, multilabel),
        truth, thresholds, budget, len(truth),
    )  # fmt: skip


def _multilabel_set(images: int = 200, labels: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot truth and well separated FP32 scores: positives 0.7-0.95, negatives 0.05-0.3."""
    rng = np.random.default_rng(0)
    truth = (rng.random((images, labels)) < 0.3).astype(np.int64)
    scores = np.where(
        truth, rng.uniform(0.7, 0.95, truth.shape), rng.uniform(0.05, 0.3, truth.shape)
    )
    return truth, scores.astype(np.float32)


def _multiclass_set(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and FP32 softmax-like scores: 0.8 on the true class."""
    truth = np.repeat(np.arange(len(counts)), counts)
    scores = np.full((len(truth), len(counts)), 0.2 / (len(counts) - 1), np.float32)
    scores[np.arange(len(truth)), truth] = 0.8
    return truth, scores


def test_decisions_are_the_devices() -> None:
    labels = ["a", "b", "c"]
    bars = class_thresholds(labels, {"score": 0.5, "per_class": {"a": 0.9}})
    assert bars.tolist() == pytest.approx([0.9, 0.5, 0.5])  # per_class, else score
    scores = np.array([[0.85, 0.1, 0.05], [0.1, 0.6, 0.3], [0.95, 0.0, 0.05]], np.float32)
    assert decide(scores, bars, multilabel=False).tolist() == [-1, 1, 0]  # 0.85 < 0.9: no label
    assert decide(scores, bars, multilabel=True).tolist() == [
        [False, False, False],
        [False, True, False],
        [True, False, False],
    ]


def test_multilabel_flips_fail_while_map_stays_within_budget() -> None:
    """The user's case: 6 % of label decisions flipped and the mAP budget let it through."""
    labels = ["can", "bottle", "box", "bag", "jar"]
    truth, fp32 = _multilabel_set()
    int8 = fp32.copy()
    # INT8 lowers every score of "can" and "bottle" by 0.13: the ranking (so AP) is unchanged,
    # but positives scoring below 0.83 now fall under the 0.7 threshold.
    int8[:, :2] -= 0.13
    thresholds = {"score": 0.7, "per_class": dict.fromkeys(labels, 0.7)}
    gate = _gate(fp32, int8, truth, labels, True, thresholds)
    assert gate["mean"]["within"] and gate["mean"]["drop_points"] == pytest.approx(0.0)
    assert not gate["within"] and "flips" in gate["failed"]
    flips = gate["flips"]
    assert flips["decisions"] == 1000 and flips["pct"] == pytest.approx(6.0)
    assert MAX_FLIPS_PCT < 6.0
    assert set(flips["changes"]) == {"can: yes -> no", "bottle: yes -> no"}
    assert flips["per_class"]["box"] == 0 and flips["per_class"]["can"] > 0
    assert "decision flips" in over_budget_message(gate, "out/report.md")
    # report.md names them: the gate's line, the change table, the flips per class.
    report = _report(gate, truth, labels, fp32, int8, thresholds, multilabel=True)
    text = "\n".join(report_sections.gate_section(report))
    assert "OVER budget (worst class, decision flips)" in text and "| can: yes -> no |" in text
    table = "\n".join(report_sections.per_class_section(report))
    assert "| flips |" in table and f"| {flips['per_class']['can']} |" in table


def test_a_collapsing_class_fails_while_the_mean_stays_within_budget() -> None:
    labels = [f"c{k}" for k in range(10)]
    truth, fp32 = _multiclass_set([33] * 9 + [3])  # 300 images; c9 has 3
    int8 = fp32.copy()
    int8[truth == 9] = np.roll(int8[truth == 9], 1, axis=1)  # every c9 image now reads c0
    thresholds = {"score": 0.5, "per_class": {}}
    gate = _gate(fp32, int8, truth, labels, False, thresholds)
    # 3 of 300 images: 1 accuracy point (budget 2) and 1 % of decisions (budget 1 %) hold.
    assert gate["mean"]["within"] and gate["mean"]["drop_points"] == pytest.approx(1.0)
    assert gate["flips"]["within"] and gate["flips"]["pct"] == pytest.approx(1.0)
    assert gate["failed"] == ["worst_class"]
    worst = gate["worst_class"]
    assert worst["label"] == "c9" and worst["fp32"] == 1.0 and worst["int8"] == 0.0
    assert worst["drop_points"] == pytest.approx(100.0)
    assert MAX_CLASS_DROP_POINTS < 100
    assert gate["flips"]["changes"] == {"c9 -> c0": 3}
    assert "worst class: 'c9' f1 1.0000 -> 0.0000" in over_budget_message(gate, "r.md")


def test_a_close_int8_file_passes() -> None:
    labels = ["can", "bottle", "box", "bag", "jar"]
    truth, fp32 = _multilabel_set()
    noise = np.random.default_rng(1).normal(0, 0.01, fp32.shape).astype(np.float32)
    thresholds = {"score": 0.5, "per_class": dict.fromkeys(labels, 0.5)}
    gate = _gate(fp32, fp32 + noise, truth, labels, True, thresholds)
    assert gate["within"] and gate["failed"] == []
    assert gate["flips"]["flipped"] == 0 and gate["worst_class"]["drop_points"] < 1
    assert gate["resolution"]["too_small"] == []  # 1000 decisions: one is 0.1 %


def test_no_label_is_a_decision_that_can_flip() -> None:
    labels = ["a", "b"]
    truth, fp32 = _multiclass_set([50, 50])
    int8 = fp32.copy()
    int8[:2] = [0.55, 0.45]  # two "a" images: still top-1 a, but under a's 0.6
    gate = _gate(fp32, int8, truth, labels, False, {"score": 0.6, "per_class": {}})
    assert gate["mean"]["drop_points"] == pytest.approx(0.0)  # argmax accuracy did not move
    assert gate["flips"]["changes"] == {"a -> (none)": 2}
    assert gate["flips"]["pct"] == pytest.approx(2.0) and gate["failed"] == ["flips"]


def test_small_sets_say_what_one_image_weighs_and_widen_nothing() -> None:
    labels = ["a", "b", "c", "d"]
    truth, fp32 = _multiclass_set([10, 10, 10, 10])  # 40 images
    res = _gate(fp32, fp32, truth, labels, False, {"score": 0.5, "per_class": {}})["resolution"]
    assert "1 image = 2.5 points of accuracy on 40 images" in res["notes"]
    assert res["image_points"] == pytest.approx(2.5) and res["decision_pct"] == pytest.approx(2.5)
    assert any("any flip fails" in reason for reason in res["too_small"])
    assert any("too small to judge" in line for line in res["lines"])
    # One flip on 40 images is 2.5 %: over the 1 % budget, as it would be on 4,000 images.
    int8 = fp32.copy()
    int8[0] = np.roll(int8[0], 1)
    gate = _gate(fp32, int8, truth, labels, False, {"score": 0.5, "per_class": {}})
    assert "flips" in gate["failed"] and gate["flips"]["pct"] == pytest.approx(2.5)


def test_a_negative_budget_always_fails() -> None:
    labels = ["a", "b"]
    truth, fp32 = _multiclass_set([5, 5])
    gate = _gate(fp32, fp32, truth, labels, False, {"score": 0.5}, Budget(-1, -1, -1))
    assert gate["failed"] == ["mean", "worst_class", "flips"]


def test_detectors_gate_on_the_worst_class_ap50() -> None:
    def art(ap50: dict[str, float], mean: float) -> ArtifactEval:
        per = {k: {"ap50": v, "ap": v / 2, "ground_truths": 10 if v == v else 0}
               for k, v in ap50.items()}  # fmt: skip
        metrics = {"mAP50": mean, "mAP": mean / 2, "mAP75": mean / 2, "per_class": per}
        return ArtifactEval(metrics, {}, [], 1.0)

    fp32 = art({"can": 0.9, "box": 0.8, "jar": float("nan")}, 0.85)
    int8 = art({"can": 0.88, "box": 0.7, "jar": float("nan")}, 0.84)
    thresholds = {"score": 0.3, "per_class": {"can": 0.4}}
    gate = int8_gate("detect", False, ["can", "box", "jar"], fp32, int8, None, thresholds,
                     Budget(), 20)  # fmt: skip
    assert gate["flips"] is None and gate["failed"] == ["worst_class"]
    assert gate["map"]["drop_points"] == pytest.approx(0.5)  # within 1.5
    assert gate["worst_class"]["label"] == "box"
    assert gate["worst_class"]["drop_points"] == pytest.approx(10.0)
    assert set(gate["worst_class"]["drops"]) == {"can", "box"}  # jar has no ground truth


def _report(gate, truth, labels, fp32, int8, thresholds, multilabel) -> dict:
    from trainer.int8_gate import per_class_figures

    arts = {
        "fp32": _art(fp32, truth, labels, multilabel),
        "int8": _art(int8, truth, labels, multilabel),
    }
    return {
        "task": "classify",
        "multilabel": multilabel,
        "torch": None,
        "artifacts": {k: {"metrics": a.metrics} for k, a in arts.items()},
        "per_class": per_class_figures("classify", multilabel, labels, arts, truth, thresholds),
        "int8_budget": gate,
    }


DET_LABELS = ["can", "bottle", "box"]


def _scene(images: int = 30) -> list[dict]:
    """Ground truths: per image one box of each class, 40-90 px, at seeded places."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(images):
        xy = rng.uniform(0, 200, (3, 2))
        wh = rng.uniform(40, 90, (3, 2))
        out.append({"boxes": np.hstack([xy, xy + wh]), "labels": np.arange(3)})
    return out


def _found(truths: list[dict], shrink: float = 1.0, every: int = 1) -> ArtifactEval:
    """Detections of every ground truth, score 0.9; every ``every``-th box shrunk about its
    centre to ``shrink`` of its width and height (IoU with its truth: shrink squared), as a
    clipped box-regression output does to the boxes it saturates."""
    predictions = []
    for i, item in enumerate(truths):
        boxes = item["boxes"].copy()
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
        moved = (i * len(boxes) + np.arange(len(boxes))) % every == 0  # across classes
        half[moved] *= shrink
        boxes = np.hstack([centre - half, centre + half])
        predictions.append({"boxes": boxes, "labels": item["labels"], "scores": np.full(3, 0.9)})
    metrics, curves = detection_metrics(truths, predictions, DET_LABELS)
    return ArtifactEval(metrics, curves, predictions, 1.0)


def _det_gate(fp32: ArtifactEval, int8: ArtifactEval, budget: Budget | None = None) -> dict:
    thresholds = {"score": 0.3, "per_class": {}}
    limits = budget or Budget()
    return int8_gate("detect", False, DET_LABELS, fp32, int8, None, thresholds, limits, 30)


def test_boxes_that_moved_fail_map_and_map75_while_map50_holds() -> None:
    """The issue's case: INT8 boxes still overlap their objects by IoU 0.64, so mAP@.5 and
    every class's AP@.5 are unchanged, but none matches at IoU 0.75 any more."""
    truths = _scene()
    fp32, int8 = _found(truths), _found(truths, shrink=0.8)
    assert int8.metrics["mAP50"] == pytest.approx(fp32.metrics["mAP50"])
    gate = _det_gate(fp32, int8)
    assert gate["failed"] == ["map", "map75"]  # the order report.md shows them in
    assert gate["mean"]["within"] and gate["worst_class"]["within"]
    assert gate["map"]["metric"] == "mAP" and gate["map75"]["metric"] == "mAP75"
    assert gate["map"]["budget_points"] == MAP_BUDGET_POINTS == 1.5
    assert gate["map75"]["budget_points"] == MAP75_BUDGET_POINTS == 3.0
    assert gate["map"]["drop_points"] == pytest.approx(
        (fp32.metrics["mAP"] - int8.metrics["mAP"]) * 100
    )
    assert gate["map75"]["int8"] == pytest.approx(0.0)  # IoU 0.64 < 0.75 everywhere
    # The exit-3 message names each figure that failed: FP32, INT8, drop, budget.
    message = over_budget_message(gate, "out/report.md")
    fp, i8 = fp32.metrics["mAP"], int8.metrics["mAP"]
    assert (
        f"mAP@[.5:.95]: FP32 {fp:.4f} -> INT8 {i8:.4f}, drop {(fp - i8) * 100:.2f} points "
        "(budget 1.5): OVER" in message
    )
    assert "mAP@.75: FP32 1.0000 -> INT8 0.0000, drop 100.00 points (budget 3): OVER" in message
    assert "overall" not in message and "worst class" not in message
    # report.md's gate section and the manifest's parity block carry them too.
    report = {"int8_budget": gate}
    text = "\n".join(report_sections.gate_section(report))
    assert "OVER budget (mAP@[.5:.95], mAP@.75)" in text
    assert "- mAP@.75: FP32 1.0000 -> INT8 0.0000" in text and "- overall: mAP50 " in text
    parity = {"int8_vs_fp32": {"max_relative_diff": 0.1, "box_agreement": 0.5}}
    compact = bw.manifest_metrics("detect", False, int8.metrics, 30, parity, gate)["parity"]
    assert compact["int8_vs_fp32"]["mAP_drop_points"] == pytest.approx(gate["map"]["drop_points"])
    assert compact["int8_vs_fp32"]["mAP75_drop_points"] == pytest.approx(100.0)
    assert compact["int8_vs_fp32"]["mAP50_drop_points"] == pytest.approx(0.0)


def test_each_localisation_figure_has_its_own_budget() -> None:
    """One box in six at IoU 0.72: mAP@.75 loses about twice what mAP@[.5:.95] loses."""
    truths = _scene()
    fp32, int8 = _found(truths), _found(truths, shrink=0.85, every=6)
    gate = _det_gate(fp32, int8)
    map_drop, map75_drop = gate["map"]["drop_points"], gate["map75"]["drop_points"]
    assert 5 < map_drop < map75_drop  # both over their defaults
    assert gate["failed"] == ["map", "map75"]
    only_75 = _det_gate(fp32, int8, Budget(map_points=map_drop + 0.1))
    assert only_75["failed"] == ["map75"] and only_75["map"]["within"]
    only_map = _det_gate(fp32, int8, Budget(map75_points=map75_drop + 0.1))
    assert only_map["failed"] == ["map"]
    assert _det_gate(fp32, int8, Budget(map_points=100, map75_points=100))["within"]


def test_boxes_within_a_pixel_pass_every_detector_check() -> None:
    truths = _scene()
    gate = _det_gate(_found(truths), _found(truths, shrink=0.995))  # IoU 0.99
    assert gate["within"] and gate["failed"] == []
    assert {gate[k]["drop_points"] for k in ("mean", "map", "map75")} == {0.0}


def test_classifiers_have_no_localisation_checks() -> None:
    labels = ["a", "b"]
    truth, fp32 = _multiclass_set([5, 5])
    gate = _gate(fp32, fp32, truth, labels, False, {"score": 0.5}, Budget(map_points=-1))
    assert gate["map"] is None and gate["map75"] is None and gate["within"]
