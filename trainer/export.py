"""``export_run``: a run folder -> a verified model bundle (ONNX or TFLite, FP32 or INT8).

Steps: rebuild ``best.pt``; export the graph (trainer.export_onnx / export_tflite); quantize
when asked (trainer.quantize, calibrated on training images preprocessed by edge_agent); run
every produced file through edge_agent's Predictor on the run's validation split
(trainer.parity); refuse an FP32 file that disagrees with PyTorch, or an INT8 file over its
budget at the thresholds the bundle ships (trainer.int8_gate: the mean, the worst class, the
decisions that flip); write the bundle with thresholds and metrics of the shipped file.

BatchNorm statistics are not recomputed here: train.py recomputes them before every validation,
so ``best.pt`` never holds stale ones (docs/training.md, "BatchNorm statistics"). The report
compares the file's metric with the run's ``best_metric`` and warns on a gap, which is how a
checkpoint with stale statistics from elsewhere would show."""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer import bundle_writer as bw
from trainer.datasets import Sample, load
from trainer.errors import InputError
from trainer.evaluate import truths
from trainer.export_tflite import (
    MissingExtraError,
    convert_log_path,
    require_litert,
    start_convert_log,
)
from trainer.int8_gate import (
    BUDGET_POINTS,
    MAP75_BUDGET_POINTS,
    MAP_BUDGET_POINTS,
    MAX_CLASS_DROP_POINTS,
    MAX_FLIPS_PCT,
    Budget,
    int8_gate,
    over_budget_message,
    per_class_figures,
)
from trainer.parity import (
    HEADLINE,
    HEADLINE_KEYS,
    PARITY_TOLERANCE,
    TORCH,
    Evaluation,
    evaluate_bundles,
    sanity_warnings,
)
from trainer.quantize import CALIB_IMAGES, calibration_samples, calibration_tensors
from trainer.run_config import CONFIG_FILE, RunConfig

log = logging.getLogger("trainer.export")

FORMATS = ("onnx", "tflite")
#: What the report's ``torch`` figures are: the same images, tensors and decoder as the files',
#: so a gap between them and a file is the export's; train.py's ``best_metric`` (its own
#: preprocessing) stands beside them as ``run_best_metric``.
TORCH_SOURCE = "best.pt in PyTorch on the tensors the device made, same decoder"


class ExportError(InputError):
    """Bad input (no run, no dataset, a busy output folder, a missing extra): exit code 2."""


class ParityError(RuntimeError):
    """The FP32 file disagrees with PyTorch beyond tolerance: an exporter bug, exit code 1."""


class BudgetExceeded(RuntimeError):
    """INT8 is over a budget (trainer.int8_gate) and ``allow_drop`` is off: exit code 3."""


@dataclass
class ExportOptions:
    fmt: str = "onnx"
    int8: bool = False
    calib_images: int = CALIB_IMAGES
    out: Path | None = None  # default: RUN/export-<fmt>[-int8]
    allow_drop: bool = False
    budget_points: float = BUDGET_POINTS  # the headline metric's drop (the mean)
    max_class_drop_points: float = MAX_CLASS_DROP_POINTS  # the worst class's drop
    max_flips_pct: float = MAX_FLIPS_PCT  # classifiers' decisions that differ from FP32
    map_budget_points: float = MAP_BUDGET_POINTS  # detectors: mAP@[.5:.95]'s drop
    map75_budget_points: float = MAP75_BUDGET_POINTS  # detectors: mAP@.75's drop
    data: Path | None = None  # default: the run's config.data
    name: str | None = None  # default: the run folder's name
    version: int = 1
    recipe: str | None = None  # default: "<model>-<preset>"
    eval_images: int | None = None  # default: the whole val split
    force: bool = False  # replace a previous export in ``out``
    threads: int = 2
    verbose: bool = False  # TFLite converter output on stderr, not in BUNDLE_DIR.convert.log


@dataclass
class ExportResult:
    bundle: Path
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def recipe(config: RunConfig, opts: ExportOptions) -> str:
    """The manifest's ``trainer.recipe``: ``--recipe``, else ``MODEL-PRESET``."""
    return opts.recipe or f"{config.model}-{config.preset}"


def default_out(run: Path, fmt: str, int8: bool) -> Path:
    return run / f"export-{fmt}{'-int8' if int8 else ''}"


def read_run(run: Path) -> tuple[RunConfig, Path]:
    """(config, best.pt path) of a run folder; ExportError naming what is missing, or
    RunConfigError naming a bad key of config.json."""
    if not run.is_dir():
        raise ExportError(f"{run}: no such run folder (expected {CONFIG_FILE} and best.pt in it)")
    config_path, ckpt = run / CONFIG_FILE, run / "best.pt"
    for path in (config_path, ckpt):
        if not path.is_file():
            raise ExportError(f"{path}: missing; is {run} a finished training run?")
    return RunConfig.read(config_path), ckpt


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force`` and it holds an earlier export."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    earlier = out.is_dir() and ((out / "manifest.json").exists() or (out / bw.REPORT_JSON).exists())
    if not (force and earlier):
        hint = " (use --force to replace it)" if earlier else ""
        raise ExportError(f"{out}: exists and is not empty: choose a new --out folder{hint}")
    shutil.rmtree(out)


def eval_and_calib(config: RunConfig, data: Path | None) -> tuple[list[Sample], list[Sample]]:
    """(train, val) samples of the run's own split, so figures match its best_metric."""
    from trainer.train import split_for_training

    folder = Path(data or config.data)
    if not folder.exists():
        raise ExportError(f"{folder}: dataset not found (the run's data; pass --data to move it)")
    ds = load(folder)
    if ds.classes != config.labels:
        raise ExportError(f"{folder}: classes {ds.classes} differ from the run's: {config.labels}")
    train, val, _ = split_for_training(ds, config.val_fraction, config.seed)
    return train, val


@dataclass
class _Job:
    """Everything known before torch is imported."""

    run: Path
    config: RunConfig  # config.json: rewritten after the last epoch (best_metric)
    ckpt: Path
    opts: ExportOptions
    out: Path
    train: list[Sample]  # calibration images come from here
    val: list[Sample]  # the evaluation images


@dataclass
class _Staged:
    """What the export step made: one provisional bundle folder per artifact, and settings."""

    dirs: dict[str, Path]
    decoder: dict[str, Any]
    nms: dict[str, Any]
    extra: list[str]  # files beside the model (anchors.npy)
    calib_images: int = 0


def export_run(run: Path | str, opts: ExportOptions) -> ExportResult:
    """Export ``run``'s best.pt into a bundle folder; see the module docstring for the steps."""
    run = Path(run)
    if opts.fmt not in FORMATS:
        raise ExportError(f"unknown format {opts.fmt!r}: expected one of {list(FORMATS)}")
    config, ckpt = read_run(run)
    out = Path(opts.out or default_out(run, opts.fmt, opts.int8))
    prepare_out(out, opts.force)
    if opts.fmt == "tflite":
        try:
            require_litert(None if opts.verbose else start_convert_log(out))
        except MissingExtraError as exc:
            raise ExportError(str(exc)) from exc
    train_s, val_s = eval_and_calib(config, opts.data)
    val_s = val_s[: opts.eval_images] if opts.eval_images else val_s
    job = _Job(run, config, ckpt, opts, out, train_s, val_s)
    with tempfile.TemporaryDirectory(prefix="edgesight-export-") as tmp:
        evaluation, staged = _export_and_evaluate(job, Path(tmp))
        return _finish(job, evaluation, staged)


def _export_and_evaluate(job: _Job, work: Path) -> tuple[Evaluation, _Staged]:
    import torch

    from trainer.export_onnx import (
        INPUT_NAME,
        ExportModule,
        box_coder_weights,
        export_onnx,
        ssd_anchors,
        torch_reference,
    )
    from trainer.export_tflite import export_tflite
    from trainer.models import load_checkpoint
    from trainer.quantize import quantize_onnx

    torch.set_flush_denormal(True)  # denormal activations slow CPU convs ~10x (train.py)
    opts = job.opts
    model, config = load_checkpoint(job.ckpt)  # the architecture, as best.pt was saved
    size, detect = config.size_px, config.task == "detect"
    module = ExportModule(model, nhwc=opts.fmt == "tflite").eval()
    staged = _Staged(
        dirs={"fp32": work / "fp32", "int8": work / "int8"},
        decoder=bw.decoder_spec(config, box_coder_weights(model) if detect else None),
        nms={
            "nms_iou": float(getattr(model, "nms_thresh", bw.DEFAULT_NMS_IOU)),
            "max_detections": int(getattr(model, "detections_per_img", bw.DEFAULT_MAX_DETECTIONS)),
        },
        extra=[bw.ANCHORS_FILE] if detect else [],
    )
    anchors = ssd_anchors(model, size) if detect else None
    for folder in staged.dirs.values():
        folder.mkdir()
        if anchors is not None:
            np.save(folder / bw.ANCHORS_FILE, anchors)
    fp32_file = staged.dirs["fp32"] / bw.MODEL_FILES[(opts.fmt, False)]
    convert_log = None if opts.verbose else convert_log_path(job.out)
    log.info("exporting %s (%s, %d px) to %s FP32", job.run, config.model, size, opts.fmt)
    if opts.fmt == "onnx":
        export_onnx(module, fp32_file, size)
    else:
        export_tflite(module, fp32_file, size, log=convert_log)
    stage = {
        "config": config,
        "fmt": opts.fmt,
        "decoder": staged.decoder,
        "nms": staged.nms,
        "extra_files": staged.extra,
    }
    bundles = {"fp32": bw.stage_bundle(staged.dirs["fp32"], int8=False, **stage)}
    pairs = [("fp32", TORCH)]
    if opts.int8:
        calib = calibration_samples(job.train, opts.calib_images, config.seed)
        tensors = calibration_tensors(calib, bundles["fp32"].manifest.input)
        staged.calib_images = len(tensors)
        int8_file = staged.dirs["int8"] / bw.MODEL_FILES[(opts.fmt, True)]
        log.info("quantizing to INT8 with %d calibration images", len(tensors))
        if opts.fmt == "onnx":
            quantize_onnx(fp32_file, int8_file, tensors, INPUT_NAME, work)
        else:
            export_tflite(module, int8_file, size, calibration=tensors, log=convert_log)
        bundles["int8"] = bw.stage_bundle(staged.dirs["int8"], int8=True, **stage)
        pairs.append(("int8", "fp32"))
    log.info("evaluating %s on %d val images through edge_agent", list(bundles), len(job.val))
    evaluation = evaluate_bundles(
        bundles,
        job.val,
        runtime=opts.fmt,  # each format runs in its own runtime
        pairs=pairs,
        reference=torch_reference(module),
        threads=opts.threads,
    )
    return evaluation, staged


def _report(
    job: _Job, evaluation: Evaluation, staged: _Staged, thresholds: dict[str, Any]
) -> dict[str, Any]:
    config, opts, run = job.config, job.opts, job.run
    task, multilabel, labels = config.task, config.multilabel, config.labels
    truth = None if task == "detect" else truths(job.val, labels, task, multilabel)
    scored = dict(evaluation.artifacts)
    if evaluation.reference is not None:
        scored = {TORCH: evaluation.reference, **scored}
    reference = None
    if evaluation.reference is not None:  # the figure beside run_best_metric (train.py's own)
        reference = {"source": TORCH_SOURCE, "metrics": evaluation.reference.metrics}
    budget = None
    if opts.int8:
        limits = Budget(
            opts.budget_points, opts.max_class_drop_points, opts.max_flips_pct,
            opts.map_budget_points, opts.map75_budget_points,
        )  # fmt: skip
        budget = int8_gate(
            task, multilabel, labels, scored["fp32"], scored["int8"], truth, thresholds,
            limits, evaluation.images,
        )  # fmt: skip
    artifacts = {}
    for name, art in evaluation.artifacts.items():
        file = bw.MODEL_FILES[(opts.fmt, name == "int8")]
        artifacts[name] = {
            "file": file,
            "bytes": (staged.dirs[name] / file).stat().st_size,
            "latency_ms_p50": art.latency_ms_p50,
            "metrics": art.metrics,
        }
    return {
        "schema": "edgesight.export/1",
        "name": opts.name or run.name,
        "run": bw.run_identity(recipe(config, opts), job.ckpt),
        "model": config.model,
        "task": task,
        "multilabel": multilabel,
        "size": config.size_px,
        "labels": config.labels,
        "format": opts.fmt,
        "precision": "int8" if opts.int8 else "fp32",
        "runtime": opts.fmt,
        "model_file": bw.MODEL_FILES[(opts.fmt, opts.int8)],
        # The dataset by folder name only: a bundle carries no path of the machine that built it.
        "eval": {
            "split": "val",
            "images": evaluation.images,
            "data": Path(opts.data or config.data).name,
        },
        "calibration": {"split": "train", "images": staged.calib_images} if opts.int8 else None,
        "artifacts": artifacts,
        "torch": reference,
        "headline_keys": HEADLINE_KEYS[(task, multilabel)],
        "per_class": per_class_figures(task, multilabel, labels, scored, truth, thresholds),
        "parity": evaluation.parity,
        "parity_tolerance": PARITY_TOLERANCE,
        "int8_budget": budget,
        "run_best_metric": {"metric": config.metric, "value": config.best_metric},
        "batchnorm": "recomputed by train.py before best.pt was saved; not recomputed here",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def _finish(job: _Job, evaluation: Evaluation, staged: _Staged) -> ExportResult:
    """Thresholds, checks, report; then the bundle, or the report alone and an exception."""
    config, opts, out = job.config, job.opts, job.out
    task, multilabel = config.task, config.multilabel
    shipped = "int8" if opts.int8 else "fp32"
    art = evaluation.artifacts[shipped]
    thresholds, recommended = bw.recommend_thresholds(
        task, multilabel, art.metrics, art.predictions, job.val, config.labels, **staged.nms
    )
    warnings, parity_ok = sanity_warnings(
        evaluation, HEADLINE[(task, multilabel)], config.best_metric, opts.fmt
    )
    report = _report(job, evaluation, staged, thresholds)
    budget = report["int8_budget"]
    over = budget is not None and not budget["within"]
    refused = not parity_ok or (over and not opts.allow_drop)
    report["status"] = (
        "failed: FP32 parity" if not parity_ok
        else "failed: INT8 over budget" if refused
        else "ok (INT8 over budget, allowed)" if over
        else "ok"
    )  # fmt: skip
    report.update(thresholds=thresholds, recommended=recommended, warnings=warnings)
    if refused:
        bw.write_report(out, report)  # figures to look at, but no manifest: nothing to deploy
        if not parity_ok:
            raise ParityError(f"{warnings[0]}; see {out / bw.REPORT_MD}")
        raise BudgetExceeded(over_budget_message(budget, str(out / bw.REPORT_MD)))
    out.mkdir(parents=True, exist_ok=True)
    model_file = bw.MODEL_FILES[(opts.fmt, opts.int8)]
    for name in [model_file, *staged.extra]:
        shutil.copy2(staged.dirs[shipped] / name, out / name)
    figures = bw.shipped_figures(task, multilabel, art.metrics, art.predictions, job.val,
                                 config.labels, thresholds)  # fmt: skip
    metrics = bw.manifest_metrics(
        task, multilabel, figures, evaluation.images, evaluation.parity, budget
    )
    report_files = bw.write_report(out, report)
    manifest = bw.build_manifest(
        config,
        name=opts.name or job.run.name,
        version=opts.version,
        fmt=opts.fmt,
        int8=opts.int8,
        decoder=staged.decoder,
        thresholds=thresholds,
        metrics=metrics,
        extra_files=[*staged.extra, *report_files],
        recipe=recipe(config, opts),
    )
    bw.write_bundle(out, manifest)  # reads the bundle back with load_bundle, as the device will
    for warning in warnings:
        log.warning("warning: %s", warning)
    return ExportResult(out, report, warnings)
