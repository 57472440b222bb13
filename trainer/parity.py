"""Score exported files through edge_agent's own Predictor, and compare them pairwise.

Why: an export can go wrong silently (docs/export.md: the dynamo exporter's graphs run but agree
on top-1 only a quarter of the time) and INT8 loses accuracy by design. So every file a bundle
ships runs on the validation images through the very code the device runs (Preprocessor,
runtime, decoder), and the figures the manifest states are that file's own. No torch here: the
PyTorch reference comes in as a numpy callable (trainer.export_onnx.torch_reference).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.geometry import box_iou
from edge_agent.predictor import Predictor
from edge_agent.types import Classifications, Detections
from trainer.datasets import Sample
from trainer.evaluate import SELECTION_METRIC, score
from trainer.quantize import read_bgr

#: FP32 export vs PyTorch: max |difference| of a raw output over that output's value range.
PARITY_TOLERANCE = 1e-3
#: Detector score threshold while scoring: COCO mAP needs the low-score tail (torchvision's
#: SSDLite uses 0.001 for the same reason).
DETECT_EVAL_SCORE = 0.001
#: Detections at or above this score are compared box for box between two files.
AGREEMENT_SCORE = 0.3
AGREEMENT_IOU = 0.5
TORCH = "torch"  # name of the PyTorch reference in pairs
#: Headline metric per (task, multilabel), the one that picks best.pt: it also decides the INT8
#: budget and the stale-BN warning.
HEADLINE = SELECTION_METRIC
HEADLINE_KEYS = {
    ("classify", False): ["accuracy", "macro_f1"],
    ("classify", True): ["mAP", "macro_f1"],
    ("detect", False): ["mAP50", "mAP", "mAP75"],
}
#: An FP32 file this far below the run's own best_metric (0.05 = 5 points) gets a warning.
STALE_GAP = 0.05

Reference = Callable[[np.ndarray], dict[str, np.ndarray]]
Outputs = dict[str, np.ndarray]


class RawStats:
    """Running max |candidate - reference| and the reference's value range, per output."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.max_abs = dict.fromkeys(self.names, 0.0)
        self.lo = dict.fromkeys(self.names, np.inf)
        self.hi = dict.fromkeys(self.names, -np.inf)

    def update(self, reference: Outputs, candidate: Outputs) -> None:
        for name in self.names:
            ref = np.asarray(reference[name], np.float32)
            got = np.asarray(candidate[name], np.float32).reshape(ref.shape)
            self.max_abs[name] = max(self.max_abs[name], float(np.abs(got - ref).max()))
            self.lo[name] = min(self.lo[name], float(ref.min()))
            self.hi[name] = max(self.hi[name], float(ref.max()))

    def summary(self) -> dict[str, Any]:
        spans = {n: max(self.hi[n] - self.lo[n], 1e-12) for n in self.names}
        relative = {n: self.max_abs[n] / spans[n] for n in self.names}
        return {
            "max_abs_diff": dict(self.max_abs),
            "output_range": {n: [self.lo[n], self.hi[n]] for n in self.names},
            "relative_diff": relative,
            "max_relative_diff": max(relative.values(), default=0.0),
        }


def matched_boxes(ref: Detections, got: Detections) -> tuple[int, int, int]:
    """(matched, reference count, candidate count) at AGREEMENT_SCORE: same class, IoU >= 0.5,
    greedy by reference score."""
    ref = ref[ref.confidence >= AGREEMENT_SCORE]
    got = got[got.confidence >= AGREEMENT_SCORE]
    matched = 0
    if len(ref) and len(got):
        iou = box_iou(ref.xyxy, got.xyxy)
        iou[ref.class_id[:, None] != got.class_id[None, :]] = 0.0
        free = np.ones(len(got), bool)
        for i in np.argsort(-ref.confidence, kind="stable"):
            cand = np.where(free, iou[i], 0.0)
            j = int(np.argmax(cand))
            if cand[j] >= AGREEMENT_IOU:
                free[j] = False
                matched += 1
    return matched, len(ref), len(got)


@dataclass
class PairStats:
    """How a candidate file agrees with its reference, image by image."""

    raw: RawStats
    agree: int = 0  # classifiers: same top-1 (or same label decisions); detectors: matched boxes
    total: int = 0

    def summary(self, task: str, multilabel: bool) -> dict[str, Any]:
        out = self.raw.summary()
        key = (
            "box_agreement"
            if task == "detect"
            else ("label_agreement" if multilabel else "top1_agreement")
        )
        out[key] = self.agree / self.total if self.total else None
        if task == "detect":
            out["box_agreement_rule"] = (
                f"matched / (reference + candidate - matched) detections at score >= "
                f"{AGREEMENT_SCORE}, same class, IoU >= {AGREEMENT_IOU}"
            )
        return out


@dataclass
class ArtifactEval:
    """One file's figures on the evaluation images."""

    metrics: dict[str, Any]
    curves: dict[str, Any]
    predictions: Any  # (N, C) scores for classifiers, per-image dicts for detectors
    latency_ms_p50: float


@dataclass
class Evaluation:
    artifacts: dict[str, ArtifactEval]
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)  # "fp32_vs_torch": {...}
    images: int = 0
    #: The PyTorch model scored on the same tensors, decoded by the same decoder (no latency).
    reference: ArtifactEval | None = None


def _plain(pred: Detections | Classifications) -> Any:
    if isinstance(pred, Detections):
        return {"boxes": pred.xyxy, "scores": pred.confidence, "labels": pred.class_id}
    return pred.scores


def _agreement(
    task: str, multilabel: bool, ref: Outputs, got: Outputs, ref_det: Any, got_det: Any
) -> tuple[int, int]:
    if task == "detect":
        matched, n_ref, n_got = matched_boxes(ref_det, got_det)
        return matched, n_ref + n_got - matched
    a, b = ref["logits"].reshape(-1), got["logits"].reshape(-1)
    if multilabel:  # sigmoid >= 0.5 is logit >= 0
        return int(((a >= 0) == (b >= 0)).sum()), a.size
    return int(np.argmax(a) == np.argmax(b)), 1


def evaluate_bundles(
    bundles: dict[str, Bundle],
    samples: Sequence[Sample],
    *,
    runtime: str,
    pairs: Sequence[tuple[str, str]],
    reference: Reference | None = None,
    threads: int = 2,
) -> Evaluation:
    """Run every bundle on ``samples`` through Predictor; score each; compare ``pairs``.

    ``pairs`` are (candidate, reference) names: bundle names or ``"torch"`` for ``reference``
    (fed the very tensor the device made; its outputs are decoded and scored too, as
    ``Evaluation.reference``). All bundles must share one input spec.
    """
    first = next(iter(bundles.values())).manifest
    task, multilabel, labels = first.task, first.multilabel, first.labels
    names = ["loc", "logits"] if task == "detect" else ["logits"]  # trainer.export_onnx's
    low = DETECT_EVAL_SCORE if task == "detect" else None
    predictors = {
        n: Predictor(b, runtime, threads, score_threshold=low) for n, b in bundles.items()
    }
    preprocess = next(iter(predictors.values())).preprocess
    decode = next(iter(predictors.values())).decode
    stats = {pair: PairStats(RawStats(names)) for pair in pairs}
    preds: dict[str, list[Any]] = {n: [] for n in predictors}
    preds.update({TORCH: []} if reference else {})
    latency: dict[str, list[float]] = {n: [] for n in predictors}
    try:
        for sample in samples:
            tensor, transform = preprocess(read_bgr(sample))
            raw: dict[str, Outputs] = {TORCH: reference(tensor)} if reference else {}
            decoded: dict[str, Any] = {}
            for name, predictor in predictors.items():
                started = time.perf_counter()
                raw[name] = predictor.runtime.run(tensor)
                latency[name].append((time.perf_counter() - started) * 1000)
                decoded[name] = predictor.decode(raw[name], transform)
                preds[name].append(_plain(decoded[name]))
            if reference:
                decoded[TORCH] = decode(raw[TORCH], transform)
                preds[TORCH].append(_plain(decoded[TORCH]))
            for (cand, ref), pair in stats.items():
                pair.raw.update(raw[ref], raw[cand])
                agree, total = _agreement(
                    task, multilabel, raw[ref], raw[cand], decoded.get(ref), decoded.get(cand)
                )
                pair.agree += agree
                pair.total += total
    finally:
        for predictor in predictors.values():
            predictor.close()
    artifacts = {}
    for name, found in preds.items():
        plain = found if task == "detect" else np.stack(found) if found else np.zeros((0, 0))
        metrics, curves = score(task, multilabel, plain, list(samples), labels)
        timed = latency.get(name)
        artifacts[name] = ArtifactEval(
            metrics, curves, plain, statistics.median(timed) if timed else 0.0
        )
    parity = {f"{c}_vs_{r}": s.summary(task, multilabel) for (c, r), s in stats.items()}
    torch_eval = artifacts.pop(TORCH, None)
    return Evaluation(artifacts, parity, len(samples), reference=torch_eval)


def within_tolerance(parity: dict[str, Any], tolerance: float = PARITY_TOLERANCE) -> bool:
    """Whether a pair's raw outputs agree within ``tolerance`` of the output range."""
    return bool(parity["max_relative_diff"] <= tolerance)


def sanity_warnings(
    evaluation: Evaluation, metric: str, run_best: float | None, fmt: str
) -> tuple[list[str], bool]:
    """(warnings, FP32 parity ok): raw outputs beyond tolerance, or a metric far below the
    run's own ``best_metric`` (how stale BatchNorm statistics would show)."""
    warnings = []
    fp32_parity = evaluation.parity["fp32_vs_torch"]
    parity_ok = within_tolerance(fp32_parity)
    if not parity_ok:
        warnings.append(
            f"FP32 {fmt} differs from PyTorch by {fp32_parity['max_relative_diff']:.2e} "
            f"of the output range (tolerance {PARITY_TOLERANCE:g})"
        )
    value = evaluation.artifacts["fp32"].metrics.get(metric)
    if isinstance(run_best, float) and isinstance(value, float) and value < run_best - STALE_GAP:
        warnings.append(
            f"FP32 {metric} {value:.4f} is below the run's best_metric {run_best:.4f}: "
            "stale BatchNorm statistics, or a different dataset than training used?"
        )
    return warnings, parity_ok
