"""Evaluate a run or checkpoint on a dataset: ``report.json`` plus confusion/PR plots.

The torch half (load the model, predict) is here; the numbers come from trainer.metrics on
plain arrays, so an exported bundle run through edge_agent can be scored by ``score`` alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle.archive import SUFFIXES
from edge_agent.bundle.manifest import Manifest
from trainer.datasets import Dataset, DatasetError, Sample, load, split
from trainer.eval_summary import headline, per_class_table, summary
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
#: What the CLI prints lives in trainer.eval_summary; named here too, where callers look for it.
__all__ = ["evaluate", "evaluate_bundle", "headline", "per_class_table", "score", "summary",
           "truths"]  # fmt: skip

#: Batch size for evaluation; inference only, so larger than training's is fine on CPU.
EVAL_BATCH = 16
#: Runtime threads for a bundle's evaluation: the agent's own default.
BUNDLE_THREADS = 2
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
    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Metrics and PR curves of plain predictions (see engine.predict) against ``samples``;
    ``threshold`` (multilabel F1) is one for all labels or one per label."""
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
    head = {
        "schema": "edgesight.eval/1", "checkpoint": str(ckpt), "data": str(data_dir),
        "images": which, "task": task, "multilabel": multilabel, "model": config.model,
        "size": config.size_px, "labels": classes,
    }  # fmt: skip
    return _write_report(out, head, metrics, curves, preds, samples)


def _write_report(
    out: Path, head: dict[str, Any], metrics: dict[str, Any], curves: dict[str, Any],
    preds: Any, samples: list[Sample],
) -> dict[str, Any]:  # fmt: skip
    """Plots, the recommended thresholds (the rule export ships) and ``out/report.json``."""
    task, multilabel, classes = head["task"], head["multilabel"], head["labels"]
    plots = []
    if "confusion_matrix" in metrics:
        plots.append(plot_confusion(np.array(metrics["confusion_matrix"]), classes,
                                    out / "confusion_matrix.png"))  # fmt: skip
    if curves:
        best = {k: v["recommended"] for k, v in metrics["per_class"].items()}
        plots += plot_pr_curves(curves, best, out / "pr_curves")
    report = {
        **head, "metrics": metrics, "selection_metric": SELECTION_METRIC[(task, multilabel)],
        "plots": [str(p.relative_to(out)) for p in plots],
    }  # fmt: skip
    if task == "detect" or multilabel:
        recommended = {k: v["recommended"] for k, v in metrics["per_class"].items()}
    else:  # the rule export applies to a multiclass bundle: top-1 and score >= threshold
        recommended = top1_best_f1(truths(samples, classes, task, False), preds, classes)
    # A multilabel label ships the middle of the gap below its best-F1 cut (export does too).
    report["recommended_thresholds"] = {
        k: v.get("margin_threshold", v["threshold"]) for k, v in recommended.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def default_bundle_out(bundle: Path) -> Path:
    """Beside the bundle, never inside it: a signed bundle may hold no file it does not list."""
    name = bundle.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):  # ".tar.gz" before ".tar"
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return bundle.parent / f"{name}-eval"


def bundle_samples(
    dataset: Dataset, manifest: Manifest, data_dir: Path
) -> tuple[list[Sample], str]:
    """The images a bundle is scored on (test, else val, else all), once the dataset is known
    to fit the bundle: same task, classes among its labels, one label per image for softmax."""
    if dataset.task != manifest.task:
        raise DatasetError(
            f"{data_dir}: holds a {dataset.task} dataset, the bundle is {manifest.task}"
        )
    if dataset.multilabel and not manifest.multilabel:
        raise DatasetError(
            f"{data_dir}: a multilabel dataset, but the bundle's classifier gives one label per "
            "image (softmax); expected class folders or a bundle with multilabel: true"
        )
    unknown = sorted(set(dataset.classes) - set(manifest.labels))
    if unknown:
        raise DatasetError(f"{data_dir}: classes {unknown} are not among the bundle's labels "
                           f"{manifest.labels}")  # fmt: skip
    groups = dataset.by_split()
    for name in ("test", "val"):
        if groups.get(name):
            return groups[name], name
    return dataset.samples, "all images"


def evaluate_bundle(
    bundle_path: Path | str,
    data_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    threads: int = BUNDLE_THREADS,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Score an exported bundle (folder or archive) on ``data_dir`` through edge_agent's own
    Predictor: the device's pre-processing, runtime and decoder, so the figures are the ones the
    device would get. A multilabel bundle's precision/recall/F1 are at its own per-label
    thresholds (``threshold``: one for every label instead). Needs no torch. Writes
    ``report.json`` and plots into ``out_dir`` (default ``default_bundle_out``)."""
    from edge_agent.bundle import load_bundle
    from trainer.parity import evaluate_bundles

    bundle = load_bundle(Path(bundle_path))
    manifest, data_dir = bundle.manifest, Path(data_dir)
    out = Path(out_dir) if out_dir is not None else default_bundle_out(Path(bundle_path))
    samples, which = bundle_samples(load(data_dir), manifest, data_dir)
    log.info("evaluating %s on %d images (%s) through edge_agent", bundle.source, len(samples),
             which)  # fmt: skip
    runtime = manifest.model.format  # the runtime that runs this file on a device
    done = evaluate_bundles({"bundle": bundle}, samples, runtime=runtime, pairs=[], threads=threads)
    art = done.artifacts["bundle"]
    task, multilabel, labels = manifest.task, manifest.multilabel, list(manifest.labels)
    metrics, curves = art.metrics, art.curves
    if multilabel:
        bars = manifest.class_thresholds() if threshold is None else threshold
        metrics, curves = score(task, multilabel, art.predictions, samples, labels, bars)
    head = {
        "schema": "edgesight.eval/1", "bundle": str(bundle.source), "data": str(data_dir),
        "images": which, "task": task, "multilabel": multilabel, "model": bundle.model_id,
        "format": manifest.model.format, "precision": manifest.model.precision,
        "runtime": runtime, "size": manifest.input.width, "labels": labels,
        "latency_ms_p50": art.latency_ms_p50,
        "bundle_thresholds": manifest.thresholds.model_dump(include={"score", "per_class"}),
    }  # fmt: skip
    return _write_report(out, head, metrics, curves, art.predictions, samples)
