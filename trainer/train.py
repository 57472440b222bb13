"""``train()``: one run from a dataset folder to a run folder, resumable and seeded.

Run folder: config.json (everything to rebuild the model), train.log, metrics.csv (one row per
epoch), checkpoints/epoch_NNN.pt (model, optimizer, scheduler, epoch: for ``resume``), best.pt
(by the selection metric), loss.png and metric.png. BatchNorm statistics are recomputed before
every validation, so ``best.pt`` and the last checkpoint never carry stale ones
(docs/training.md, "BatchNorm statistics").
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainer import __version__
from trainer.datasets import Dataset, DatasetError, Sample, load, split
from trainer.engine import BN_BATCHES, recompute_bn_stats, train_one_epoch, validate
from trainer.errors import InputError
from trainer.evaluate import SELECTION_METRIC, score
from trainer.models import (
    IMAGENET_MEAN_STD,
    SSDLITE_MEAN_STD,
    build_from_config,
    freeze_backbone,
    list_models,
    model_info,
    unfreeze_backbone,
)
from trainer.plots import plot_history
from trainer.presets import get_preset
from trainer.pretrained import as_recorded, resolve, start_model
from trainer.run_config import CONFIG_FILE, RunConfig
from trainer.torchdata import ClassificationData, DetectionData, collate_detection, seed_worker

log = logging.getLogger("trainer")

#: Defaults per task: batch size (images) and AdamW learning rate.
DEFAULT_BATCH = {"classify": 32, "detect": 8}
DEFAULT_LR = {"classify": 2e-3, "detect": 3e-3}
WEIGHT_DECAY = 1e-4
#: Linear warm-up steps (at most this share of all steps), then cosine decay to LR x floor.
WARMUP_STEPS = 100
WARMUP_MAX_SHARE = 0.1
COSINE_FLOOR = 0.02
#: A val metric must beat the best by more than this to reset early stopping's patience.
MIN_DELTA = 1e-4
#: Epoch checkpoints kept (the newest); each holds optimizer state, ~3x the model.
KEEP_CHECKPOINTS = 2
CSV_FIELDS = ["epoch", "train_loss", "val_loss", "val_metric", "lr", "seconds"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_for_training(ds: Dataset, val_fraction: float, seed: int) -> tuple[list, list, str]:
    """(train, val, source): the dataset's own val split, else a seeded stratified one."""
    groups = ds.by_split()
    if groups.get("val"):
        train = [s for s in ds.samples if s.split not in ("val", "test")]
        return train, groups["val"], "dataset"
    pool = Dataset(ds.task, ds.classes, [s for s in ds.samples if s.split != "test"], ds.multilabel)
    again = split(pool, val_fraction, seed)
    train = [s for s in again.samples if s.split == "train"]
    val = [s for s in again.samples if s.split == "val"]
    if not val:
        raise DatasetError(f"{len(pool.samples)} images are too few for a validation split")
    return train, val, "seeded split"


def _data(samples: list[Sample], cfg: RunConfig, train: bool, preset: str) -> Any:
    transform = get_preset(preset, cfg.task, cfg.size_px, train=train)
    if cfg.task == "detect":
        return DetectionData(samples, cfg.labels, transform)
    return ClassificationData(samples, cfg.labels, transform, cfg.multilabel)


def _loader(data: Any, cfg: RunConfig, shuffle: bool, seed: int, workers: int,
            drop: bool = False) -> DataLoader:  # fmt: skip
    return DataLoader(
        data, batch_size=cfg.batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop,
        generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker,
        collate_fn=collate_detection if cfg.task == "detect" else None,
    )  # fmt: skip


def _schedule(total_steps: int):
    """LR factor per step: linear warm-up, then cosine to COSINE_FLOOR."""
    warmup = max(1, min(WARMUP_STEPS, int(total_steps * WARMUP_MAX_SHARE)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _make_config(task: str, model_name: str, data_dir: Path, ds: Dataset, **kw: Any) -> RunConfig:
    info = model_info(model_name)
    if info.task != task:
        raise InputError(f"{model_name} is a {info.task} model, not {task}: expected one of "
                         f"{list_models(task)}")  # type: ignore[arg-type]  # fmt: skip
    if ds.task != task:
        raise DatasetError(f"{data_dir}: holds a {ds.task} dataset, but --task is {task}")
    size = kw.pop("size") or info.default_size
    mean, std = SSDLITE_MEAN_STD if task == "detect" else IMAGENET_MEAN_STD
    fields = dict(
        task=task, model=model_name, labels=ds.classes, multilabel=ds.multilabel, size_px=size,
        data=str(data_dir.resolve()), batch_size=kw.pop("batch_size") or DEFAULT_BATCH[task],
        lr=kw.pop("lr") or DEFAULT_LR[task], optimizer="AdamW", weight_decay=WEIGHT_DECAY,
        metric=SELECTION_METRIC[(task, ds.multilabel)],
        input=dict(width_px=size, height_px=size, layout="NCHW", color="RGB",
                   resize="stretch", mean=mean, std=std, scale="1/255"),
        background_class=0 if task == "detect" else None, trainer_version=__version__,
        torch=str(torch.__version__), created=datetime.now(UTC).isoformat(timespec="seconds"),
        **kw,
    )  # fmt: skip
    return RunConfig.parse(fields, "train settings")  # a bad argument: RunConfigError, exit 2


def train(
    task: str,
    model_name: str,
    data_dir: Path | str,
    out_dir: Path | str,
    epochs: int,
    *,
    batch_size: int | None = None,
    lr: float | None = None,
    size: int | None = None,
    preset: str = "default",
    seed: int = 0,
    weights: Path | str | None = None,
    resume: bool = False,
    patience: int = 0,
    device: str | None = None,
    val_fraction: float = 0.2,
    workers: int = 0,
    threads: int | None = None,
    freeze_epochs: int = 0,
    bn_batches: int = BN_BATCHES,
    max_steps: int | None = None,
    download_weights: bool = False,
) -> Path:
    """Train and return the run folder ``out_dir``.

    With ``resume`` the run's config.json wins over the arguments except ``epochs`` (the new
    total), ``patience``, ``device``, ``workers`` and ``threads``. ``max_steps`` caps the
    batches per epoch (smoke tests). ``freeze_epochs`` trains only the head that long.
    ``weights``: ``imagenet``, ``coco`` (trainer.pretrained; fetched only when
    ``download_weights`` or EDGESIGHT_ALLOW_DOWNLOAD allows) or a local file.
    """
    run = Path(out_dir)
    if epochs < 1:
        raise InputError(f"epochs must be at least 1, got {epochs}")
    if resume and not (run / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"cannot resume: no {CONFIG_FILE} in {run}")
    if not resume and run.exists() and any(run.iterdir()):
        raise FileExistsError(f"{run} exists and is not empty: resume it or choose a new folder")
    if not resume:
        model_info(model_name)  # an unknown name fails before the dataset is read
        get_preset(preset, "detect" if task == "detect" else "classify", size or 64)
    if threads:
        torch.set_num_threads(threads)
    # Trained MobileNets produce denormal activations; on x86 they made every conv ~10x slower
    # (1.6 s vs 0.16 s for an SSDLite batch of 4 at 128 px). Flushing them to zero costs nothing.
    torch.set_flush_denormal(True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if resume:
        cfg = RunConfig.read(run / CONFIG_FILE)
        ds = load(cfg.data)
    else:  # every check that can fail runs before the run folder exists
        if weights is not None:  # a name is checked against the model, and fetched if allowed
            resolve(weights, model_name, download_weights)
        ds = load(Path(data_dir))
        cfg = _make_config(task, model_name, Path(data_dir), ds, size=size,
                           batch_size=batch_size, lr=lr, preset=preset, seed=seed,
                           weights=as_recorded(weights),
                           val_fraction=val_fraction, freeze_epochs=freeze_epochs)  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _run(run, cfg, ds, epochs, resume, patience, device, workers, bn_batches, max_steps)
    finally:
        log.removeHandler(handler)
        handler.close()


def _run(run: Path, cfg: RunConfig, ds: Dataset, epochs: int, resume: bool, patience: int,
         device: str, workers: int, bn_batches: int, max_steps: int | None) -> Path:  # fmt: skip
    if ds.classes != cfg.labels:
        raise DatasetError(f"{cfg.data}: classes {ds.classes} differ from the run's")
    train_s, val_s, val_source = split_for_training(ds, cfg.val_fraction, cfg.seed)
    seed_everything(cfg.seed)
    if resume:  # the checkpoint has the weights; the config the architecture
        model = build_from_config(cfg)
    else:  # train() fetched a named file already: here it is in the cache
        model, start = start_model(cfg.model, cfg.labels, cfg.weights, multilabel=cfg.multilabel,
                                   size=cfg.size_px)  # fmt: skip
        cfg = cfg.updated(start_weights=start.model_dump() if start else None)
    cfg = cfg.updated(val_source=val_source, split={"train": len(train_s), "val": len(val_s)},
                      epochs=epochs, reduced_tail=getattr(model, "reduced_tail", None))  # fmt: skip
    model.to(device)
    train_data = _data(train_s, cfg, True, cfg.preset)
    drop = len(train_data) > cfg.batch_size  # a last batch of 1 breaks BatchNorm
    steps = len(train_data) // cfg.batch_size if drop else 1
    steps = min(steps, max_steps) if max_steps else steps
    val_loader = _loader(_data(val_s, cfg, False, "none"), cfg, False, 0, workers)
    bn_loader = _loader(_data(train_s, cfg, False, "none"), cfg, True, cfg.seed, workers, drop)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps * epochs))
    state = {"epoch": 0, "best_metric": -1.0, "best_epoch": 0, "bad_epochs": 0}
    if resume:
        state = _restore(run, model, optimizer, scheduler)
    cfg.write(run / CONFIG_FILE)
    rows = _read_rows(run / "metrics.csv", state["epoch"])
    log.info("%s %s on %s: %d train / %d val images (%s), %d steps/epoch, size %d, device %s, "
             "%d threads", cfg.task, cfg.model, cfg.data, len(train_s), len(val_s),
             cfg.val_source, steps, cfg.size_px, device, torch.get_num_threads())  # fmt: skip
    for epoch in range(state["epoch"] + 1, epochs + 1):
        started = time.perf_counter()
        seed_everything(cfg.seed * 1000 + epoch)  # same data order and augmentation on resume
        loader = _loader(train_data, cfg, True, cfg.seed * 1000 + epoch, workers, drop)
        frozen = cfg.weights and epoch <= cfg.freeze_epochs
        (freeze_backbone if frozen else unfreeze_backbone)(model)
        train_loss = train_one_epoch(model, loader, optimizer, scheduler, device, task=cfg.task,
                                     multilabel=cfg.multilabel, desc=f"epoch {epoch}/{epochs}",
                                     max_steps=steps)  # fmt: skip
        recompute_bn_stats(model, bn_loader, bn_batches, device)
        val_loss, preds = validate(model, val_loader, device, task=cfg.task,
                                   multilabel=cfg.multilabel)  # fmt: skip
        metrics, _ = score(cfg.task, cfg.multilabel, preds, val_s, cfg.labels)
        value = metrics[cfg.metric]
        value = 0.0 if value != value else float(value)  # NaN: no val ground truth
        row = {"epoch": epoch, "train_loss": f"{train_loss:.5f}", "val_loss": f"{val_loss:.5f}",
               "val_metric": f"{value:.5f}", "lr": f"{optimizer.param_groups[0]['lr']:.3e}",
               "seconds": f"{time.perf_counter() - started:.1f}"}  # fmt: skip
        rows.append(row)
        improved = value > state["best_metric"] + MIN_DELTA
        state.update(epoch=epoch, bad_epochs=0 if improved else state["bad_epochs"] + 1)
        if improved:
            state.update(best_metric=value, best_epoch=epoch)
            torch.save({"model": model.state_dict(), "config": cfg.to_json(), "epoch": epoch,
                        "metric": value}, run / "best.pt")  # fmt: skip
        _save_epoch(run, model, optimizer, scheduler, cfg, state)
        _write_rows(run / "metrics.csv", rows)
        plot_history(rows, cfg.metric, run)
        log.info("epoch %d/%d: train loss %s, val loss %s, val %s %s, %ss", epoch, epochs,
                 row["train_loss"], row["val_loss"], cfg.metric, row["val_metric"],
                 row["seconds"])  # fmt: skip
        if patience and state["bad_epochs"] >= patience:
            log.info("early stop: no %s gain for %d epochs", cfg.metric, patience)
            break
    cfg = cfg.updated(best_epoch=state["best_epoch"], best_metric=state["best_metric"],
                      epochs_run=state["epoch"])  # fmt: skip
    cfg.write(run / CONFIG_FILE)
    log.info("best %s %.4f at epoch %d: %s", cfg.metric, state["best_metric"],
             state["best_epoch"], run / "best.pt")  # fmt: skip
    return run


def _save_epoch(run: Path, model, optimizer, scheduler, cfg: RunConfig, state: dict) -> None:
    folder = run / "checkpoints"
    folder.mkdir(exist_ok=True)
    path = folder / f"epoch_{state['epoch']:03d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "config": cfg.to_json(), **state},
               tmp)  # fmt: skip
    tmp.replace(path)  # a kill mid-save must not leave a truncated "latest" checkpoint
    for old in sorted(folder.glob("epoch_*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()


def _restore(run: Path, model, optimizer, scheduler) -> dict:
    found = sorted((run / "checkpoints").glob("epoch_*.pt"))
    if not found:
        raise FileNotFoundError(f"cannot resume: no checkpoints/epoch_*.pt in {run}")
    ckpt = torch.load(found[-1], map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    log.info("resuming %s after epoch %d", run, ckpt["epoch"])
    return {k: ckpt[k] for k in ("epoch", "best_metric", "best_epoch", "bad_epochs")}


def _read_rows(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["epoch"]) <= upto]


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
