"""Evaluate a run or checkpoint on a dataset: ``report.json`` plus confusion/PR plots.

The torch half (load the model, predict) is here; the numbers come from trainer.metrics on
plain arrays, so an exported bundle run through edge_agent can be scored by ``score`` alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from trainer.datasets import Dataset, DatasetError, Sample, load, split
from trainer.metrics import (
    DEFAULT_THRESHOLD,
    classification_metrics,
    detection_metrics,
    json_safe,
    multilabel_metrics,
    top1_best_f1,
)
from trainer.plots import plot_confusion, plot_pr_curves
from trainer.run_config import RunConfig

log = logging.getLogger(__name__)

#: Batch size for evaluation; inference only, so larger than training's is fine on CPU.
EVAL_BATCH = 16
#: The metric that picks ``best.pt``, by (task, multilabel).
SELECTION_METRIC = {("classify", False): "accuracy", ("classify", True): "mAP",
                    ("detect", False): "mAP50"}  # fmt: skip


def truths(samples: list[Sample], classes: list[str], task: str, multilabel: bool) -> Any:
    """Ground truth in trainer.metrics' shapes: class indices, multi-hot rows, or box dicts."""
    index = {name: i for i, name in enumerate(classes)}
    if task == "detect":
        return [{"boxes": np.array([b.xyxy for b in s.boxes], np.float64).reshape(-1, 4),
                 "labels": np.array([index[b.label] for b in s.boxes], np.int64),
                 "ignore": np.array([b.difficult for b in s.boxes], bool)}
                for s in samples]  # fmt: skip
    if multilabel:
        hot = np.zeros((len(samples), len(classes)), np.int64)
        for row, s in enumerate(samples):
            hot[row, [index[n] for n in s.labels]] = 1
        return hot
    return np.array([index[s.labels[0]] for s in samples], np.int64)


def score(
    task: str, multilabel: bool, predictions: Any, samples: list[Sample], classes: list[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Metrics and PR curves of plain predictions (see engine.predict) against ``samples``."""
    truth = truths(samples, classes, task, multilabel)
    if task == "detect":
        return detection_metrics(truth, predictions, classes)
    if multilabel:
        return multilabel_metrics(truth, predictions, classes, threshold)
    return classification_metrics(truth, predictions, classes), {}


def eval_samples(dataset: Dataset, config: RunConfig, data_dir: Path) -> tuple[list, str]:
    """Which images to score: test, else val, else the run's own seeded val split of this data.

    A dataset without splits that the run itself trained on would otherwise be scored on its
    training images, which flatters the model.
    """
    groups = dataset.by_split()
    for name in ("test", "val"):
        if groups.get(name):
            return groups[name], name
    same = Path(config.data).resolve() == data_dir.resolve()
    if same and config.val_source == "seeded split":
        again = split(dataset, config.val_fraction, config.seed)
        return [s for s in again.samples if s.split == "val"], "val (the run's seeded split)"
    return dataset.samples, "all images"


def resolve_checkpoint(run_or_checkpoint: Path) -> Path:
    """A run folder means its ``best.pt``; a file is used as is."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a run folder or a .pt file")
    return path


def evaluate(
    run_or_checkpoint: Path | str,
    data_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    device: str | None = None,
    batch_size: int = EVAL_BATCH,
    threshold: float = DEFAULT_THRESHOLD,
    threads: int | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on ``data_dir``; write ``report.json`` and plots into ``out_dir``.

    ``out_dir`` defaults to ``<run>/eval`` (a checkpoint's folder for a bare file); ``threads``
    sets torch's CPU threads, as ``train`` does (None: torch's own). Returns the report; the
    CLI prints ``summary(report)``, this function logs only what it is about to score.
    """
    import torch
    from torch.utils.data import DataLoader

    from trainer.engine import predict
    from trainer.models import load_checkpoint
    from trainer.presets import get_preset
    from trainer.torchdata import ClassificationData, DetectionData, collate_detection

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # denormal activations slow CPU convs ~10x (see train.py)
    ckpt = resolve_checkpoint(Path(run_or_checkpoint))
    data_dir = Path(data_dir)
    out = Path(out_dir) if out_dir is not None else ckpt.parent / "eval"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config = load_checkpoint(ckpt, device)
    task, multilabel, classes = config.task, config.multilabel, config.labels
    dataset = load(data_dir)
    if dataset.task != task:
        raise DatasetError(f"{data_dir}: holds a {dataset.task} dataset, the model is {task}")
    unknown = sorted(set(dataset.classes) - set(classes))
    if unknown:
        raise DatasetError(f"{data_dir}: classes {unknown} are not among the model's {classes}")
    samples, which = eval_samples(dataset, config, data_dir)
    log.info("evaluating %s on %d images (%s)", ckpt, len(samples), which)
    transform = get_preset("none", task, config.size_px, train=False)
    if task == "detect":
        data: Any = DetectionData(samples, classes, transform)
        loader = DataLoader(data, batch_size=batch_size, collate_fn=collate_detection)
    else:
        data = ClassificationData(samples, classes, transform, multilabel)
        loader = DataLoader(data, batch_size=batch_size)
    preds = predict(model, loader, device, task=task, multilabel=multilabel)
    metrics, curves = score(task, multilabel, preds, samples, classes, threshold)
    plots = []
    if "confusion_matrix" in metrics:
        plots.append(plot_confusion(np.array(metrics["confusion_matrix"]), classes,
                                    out / "confusion_matrix.png"))  # fmt: skip
    if curves:
        best = {k: v["recommended"] for k, v in metrics["per_class"].items()}
        plots += plot_pr_curves(curves, best, out / "pr_curves")
    report = {
        "schema": "edgesight.eval/1", "checkpoint": str(ckpt), "data": str(data_dir),
        "images": which, "task": task, "multilabel": multilabel, "model": config.model,
        "size": config.size_px, "labels": classes, "metrics": metrics,
        "selection_metric": SELECTION_METRIC[(task, multilabel)],
        "plots": [str(p.relative_to(out)) for p in plots],
    }  # fmt: skip
    if task == "detect" or multilabel:
        recommended = {k: v["recommended"] for k, v in metrics["per_class"].items()}
    else:  # the rule export applies to a multiclass bundle: top-1 and score >= threshold
        recommended = top1_best_f1(truths(samples, classes, task, False), preds, classes)
    report["recommended_thresholds"] = {k: v["threshold"] for k, v in recommended.items()}
    out.mkdir(parents=True, exist_ok=True)
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def headline(report: dict[str, Any]) -> str:
    """The one-line summary the CLI prints."""
    m = {k: "n/a" if v is None else f"{v:.3f}" for k, v in report["metrics"].items()
         if k in ("mAP", "mAP50", "accuracy", "macro_f1")}  # fmt: skip
    if report["task"] == "detect":
        return f"mAP@.5 {m['mAP50']}, mAP@[.5:.95] {m['mAP']}"
    if report["multilabel"]:
        return f"mAP {m['mAP']}, macro F1 {m['macro_f1']} at {report['metrics']['threshold']:g}"
    return f"accuracy {m['accuracy']}, macro F1 {m['macro_f1']}"


def _cell(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def per_class_table(report: dict[str, Any]) -> list[str]:
    """Per-class figures as aligned text lines: precision/recall/F1 for classifiers (with AP for
    multilabel ones), AP@.5 and AP@[.5:.95] for detectors; support or ground-truth boxes last."""
    per = report["metrics"]["per_class"]
    if report["task"] == "detect":
        columns = [("AP@.5", "ap50"), ("AP@[.5:.95]", "ap"), ("boxes", "ground_truths")]
    elif report["multilabel"]:
        columns = [("AP", "ap"), ("precision", "precision"), ("recall", "recall"),
                   ("F1", "f1"), ("support", "support")]  # fmt: skip
    else:
        columns = [("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
                   ("support", "support")]  # fmt: skip
    rows = [["class", *(title for title, _ in columns)]]
    rows += [[name, *(_cell(row.get(key)) for _, key in columns)] for name, row in per.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def summary(report: dict[str, Any], report_path: Path) -> list[str]:
    """What ``edge-trainer evaluate`` prints: the headline once, then the per-class table."""
    images = report["metrics"]["images"]
    first = f"{headline(report)} on {images} images ({report['images']}) -> {report_path}"
    return [first, *per_class_table(report)]
