"""Manifest parts from a run's config.json and an evaluation, and the bundle files themselves.

Everything here follows docs/bundle.md; ``edge_agent.bundle.write_manifest`` fills in the
sha256 of every file, and every bundle is read back with ``load_bundle`` before it is handed
out, so the trainer can never write a bundle the agent would refuse.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from edge_agent.bundle import Bundle, load_bundle, write_manifest
from edge_agent.bundle.manifest import SCHEMA
from edge_agent.fsutil import sha256_file
from trainer import __version__
from trainer import report as report_sections
from trainer.evaluate import score, truths
from trainer.metrics import json_safe, top1_best_f1
from trainer.report import fmt
from trainer.run_config import RunConfig

#: Model file names by (format, int8).
MODEL_FILES = {
    ("onnx", False): "model.onnx",
    ("onnx", True): "model.int8.onnx",
    ("tflite", False): "model.tflite",
    ("tflite", True): "model.int8.tflite",
}
ANCHORS_FILE = "anchors.npy"
#: The export report sits inside the bundle and is listed in ``files``: a signed bundle may hold
#: no unlisted file, and the figures should travel (and be signed) with the model they describe.
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: Global score threshold when the evaluation recommends none (no class was ever found).
DEFAULT_SCORE = 0.5
#: Thresholds are floored to this many decimals, so a score equal to the best-F1 one still passes.
THRESHOLD_DECIMALS = 4
#: How report.md says where a multilabel label's threshold sits (trainer.metrics.margin_threshold).
MARGIN_NOTE = (
    "- multilabel: each label's is the middle, in log-odds, of the gap between its best-F1 cut "
    "and the next lower score (the same decisions on these images, away from both)"
)
#: Hex digits of a sha256 that report.md shows (report.json keeps all 64).
SHORT_HASH = 12
#: Parity figures copied into manifest.metrics; report.json keeps them all.
PARITY_KEPT = ("max_relative_diff", "top1_agreement", "label_agreement", "box_agreement")
#: Detector NMS settings when the model names none (torchvision's SSD carries its own). A
#: classifier's thresholds block has neither: NMS and max_detections apply to detectors only.
DEFAULT_NMS_IOU = 0.45
DEFAULT_MAX_DETECTIONS = 100


def parse_scale(value: Any) -> float:
    """config.json writes ``scale`` as ``"1/255"``; the manifest wants a number."""
    if isinstance(value, str):
        return float(Fraction(value.strip()))
    return float(value)


def input_spec(config: RunConfig, layout: str) -> dict[str, Any]:
    """The manifest's ``input`` from the run's: what the model was trained on, in ``layout``."""
    spec = config.input
    return {
        "name": "images",
        "width": spec.width_px,
        "height": spec.height_px,
        "layout": layout,
        "dtype": "float32",
        "color": spec.color,
        "scale": parse_scale(spec.scale),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "resize": spec.resize,
    }


def decoder_spec(config: RunConfig, box_coder_weights: list[float] | None) -> dict[str, Any]:
    """softmax / sigmoid over ``logits`` for classifiers; ``ssd_anchors`` for the SSD head."""
    if config.task == "classify":
        kind = "sigmoid" if config.multilabel else "softmax"
        return {"type": kind, "output": "logits", "from_logits": True}
    return {
        "type": "ssd_anchors",
        "outputs": {"boxes": "loc", "scores": "logits"},
        "anchors_file": ANCHORS_FILE,
        "anchors_format": "xyxy",
        "anchors_normalized": True,
        "box_coder": {"order": "xywh", "weights": box_coder_weights or [10.0, 10.0, 5.0, 5.0]},
        "score_activation": "softmax",
        "background_class": 0,
    }


def _floor(value: float) -> float:
    scale = 10**THRESHOLD_DECIMALS
    return math.floor(value * scale) / scale


def chosen_threshold(recommended: dict[str, Any], multilabel: bool) -> float:
    """The threshold a class ships with: a multilabel label's margin threshold (the middle of
    the gap below its best-F1 cut, trainer.metrics.margin_threshold), else the best-F1 cut."""
    if multilabel and recommended.get("margin_threshold") is not None:
        return float(recommended["margin_threshold"])
    return _floor(recommended["threshold"])


def recommend_thresholds(
    task: str,
    multilabel: bool,
    metrics: dict[str, Any],
    predictions: Any,
    samples: list,
    labels: list[str],
    nms_iou: float = DEFAULT_NMS_IOU,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest ``thresholds``, the best-F1 recommendation per class it came from).

    ``per_class`` holds each class's best-F1 score threshold on the evaluation images (for a
    multilabel label the middle of the gap below it: ``chosen_threshold``); ``score``
    (for classes the evaluation could not rate) is the median of those, else DEFAULT_SCORE.
    ``nms_iou`` and ``max_detections`` are written for detectors only.
    """
    if task == "classify" and not multilabel:
        recommended = top1_best_f1(truths(samples, labels, "classify", False), predictions, labels)
    else:
        recommended = {k: v["recommended"] for k, v in metrics["per_class"].items()}
    per_class = {
        name: chosen_threshold(r, multilabel) for name, r in recommended.items()
        if r["threshold"] is not None
    }  # fmt: skip
    score = _floor(statistics.median(per_class.values())) if per_class else DEFAULT_SCORE
    thresholds: dict[str, Any] = {"score": min(max(score, 0.0), 1.0), "per_class": per_class}
    if task == "detect":
        thresholds.update(nms_iou=nms_iou, max_detections=max_detections)
    return thresholds, recommended


def run_identity(recipe: str, checkpoint: Path) -> dict[str, str]:
    """What the report names the run by: its recipe and the sha256 of the exported ``best.pt``.
    Not the run folder's path: a bundle carries nothing of the machine that built it."""
    return {"recipe": recipe, "best_pt_sha256": sha256_file(checkpoint)}


def shipped_figures(
    task: str, multilabel: bool, metrics: dict[str, Any], predictions: Any, samples: list,
    labels: list[str], thresholds: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The shipped file's metrics as the device decides: a multilabel file's precision, recall
    and F1 counted again at its per-label ``thresholds`` (the evaluation counted them at 0.5,
    which the device never uses); other tasks' as they are."""
    if task != "classify" or not multilabel:
        return metrics
    bars = [thresholds["per_class"].get(label, thresholds["score"]) for label in labels]
    return score(task, multilabel, predictions, samples, labels, bars)[0]


def manifest_metrics(
    task: str, multilabel: bool, metrics: dict[str, Any], images: int,
    parity: dict[str, dict[str, Any]], budget: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """The headline figures of the shipped file for ``manifest.metrics`` (full ones: report),
    with the parity figures people compare: relative difference, agreement, INT8 drop."""
    compact = {pair: {k: v for k, v in figures.items() if k in PARITY_KEPT}
               for pair, figures in parity.items()}  # fmt: skip
    if budget:
        pair = compact["int8_vs_fp32"]
        pair[f"{budget['metric']}_drop_points"] = budget["drop_points"]
        for name in ("map", "map75"):  # detectors' localisation checks (trainer.int8_gate)
            if budget.get(name):
                pair[f"{budget[name]['metric']}_drop_points"] = budget[name]["drop_points"]
        worst = budget["worst_class"]
        pair[f"worst_class_{worst['metric']}_drop_points"] = worst["drop_points"]
        if budget.get("flips"):
            pair["decision_flips_pct"] = budget["flips"]["pct"]
    per = metrics["per_class"]
    if task == "detect":
        out = {
            "mAP50": metrics["mAP50"],
            "mAP": metrics["mAP"],
            "mAP75": metrics["mAP75"],
            "per_class_ap50": {k: v["ap50"] for k, v in per.items()},
        }
    elif multilabel:
        out = {
            "mAP": metrics["mAP"],
            "macro_f1": metrics["macro_f1"],
            "per_class_ap": {k: v["ap"] for k, v in per.items()},
        }
    else:
        out = {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "per_class_f1": {k: v["f1"] for k, v in per.items()},
        }
    return json_safe({**out, "eval_images": images, "eval_split": "val", "parity": compact})


def build_manifest(
    config: RunConfig,
    *,
    name: str,
    version: int,
    fmt: str,
    int8: bool,
    decoder: dict[str, Any],
    thresholds: dict[str, Any],
    metrics: dict[str, Any],
    extra_files: list[str],
    recipe: str,
) -> dict[str, Any]:
    """A full manifest dict; ``files`` lists names only, write_manifest adds the hashes."""
    model_file = MODEL_FILES[(fmt, int8)]
    return {
        "schema": SCHEMA,
        "name": name,
        "version": version,
        "task": config.task,
        "multilabel": config.multilabel,
        "labels": list(config.labels),
        "model": {"file": model_file, "format": fmt, "precision": "int8" if int8 else "fp32"},
        "input": input_spec(config, "NHWC" if fmt == "tflite" else "NCHW"),
        "decoder": decoder,
        "thresholds": thresholds,
        "metrics": metrics,
        "files": dict.fromkeys([model_file, *extra_files], ""),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "trainer": {
            "version": __version__,
            "recipe": recipe,
            "model": config.model,
            "epochs": config.epochs_run,
            "best_epoch": config.best_epoch,
        },
    }


def write_bundle(folder: Path, manifest: dict[str, Any]) -> Bundle:
    """Hash the listed files into manifest.json, then read the bundle back as the agent does."""
    write_manifest(folder, json_safe(manifest))
    return load_bundle(folder)


def stage_bundle(
    folder: Path, *, config: RunConfig, fmt: str, int8: bool, decoder: dict[str, Any],
    nms: dict[str, Any], extra_files: list[str],
) -> Bundle:  # fmt: skip
    """A provisional bundle for the Predictor to evaluate: no per-class thresholds (they would
    hide the low-score detections mAP needs), no metrics yet."""
    thresholds = {"score": DEFAULT_SCORE, **(nms if config.task == "detect" else {})}
    manifest = build_manifest(
        config, name="staged", version=0, fmt=fmt, int8=int8, decoder=decoder,
        thresholds=thresholds, metrics={}, extra_files=extra_files, recipe="staged",
    )  # fmt: skip
    return write_bundle(folder, manifest)


def report_markdown(report: dict[str, Any]) -> str:
    """The human-readable twin of report.json."""
    run = report["run"]
    lines = [
        f"# Export report: {report['name']} ({report['format']}, {report['precision']})",
        "",
        f"- run: recipe `{run['recipe']}`, best.pt sha256 `{run['best_pt_sha256'][:SHORT_HASH]}` "
        f"({report['model']}, {report['size']} px, "
        f"{report['task']}{', multilabel' if report['multilabel'] else ''})",
        f"- evaluated on {report['eval']['images']} {report['eval']['split']} images "
        f"through edge_agent's Predictor (runtime `{report['runtime']}`)",
        f"- status: **{report['status']}**",
        "",
        "## Files",
        "",
        "| artifact | file | bytes | latency p50 (ms, this machine) |",
        "|---|---|---|---|",
    ]
    for art, info in report["artifacts"].items():
        lines.append(
            f"| {art} | {info['file']} | {info['bytes']} | {fmt(info['latency_ms_p50'])} |"
        )
    lines += ["", *report_sections.metrics_section(report)]
    lines += ["", *report_sections.per_class_section(report)] if report.get("per_class") else []
    lines += ["", "## Parity", ""]
    for pair, figures in report["parity"].items():
        shown = {k: v for k, v in figures.items() if isinstance(v, int | float | None)}
        lines.append(f"- {pair}: " + ", ".join(f"{k} {fmt(v)}" for k, v in shown.items()))
    lines += ["", *report_sections.gate_section(report)] if report.get("int8_budget") else []
    lines += [
        "",
        "## Thresholds (best F1 per class on the evaluation images)",
        "",
        *([MARGIN_NOTE] if report["multilabel"] else []),
        f"- score {report['thresholds']['score']}, per class: "
        + (
            ", ".join(f"{k} {v}" for k, v in report["thresholds"]["per_class"].items())
            or "none (no class was found)"
        ),
    ]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, report: dict[str, Any]) -> list[str]:
    """report.json and report.md into ``folder``; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    safe = json_safe(report)
    (folder / REPORT_JSON).write_text(json.dumps(safe, indent=2) + "\n", encoding="utf-8")
    (folder / REPORT_MD).write_text(report_markdown(safe), encoding="utf-8")
    return [REPORT_JSON, REPORT_MD]
