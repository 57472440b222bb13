"""Training and inference loops only, as torchvision's references/detection/engine.py.

Every loop takes the task and ``multilabel`` so one code path serves classifiers (logits ->
cross-entropy or BCE-with-logits) and torchvision detectors (a dict of losses in train mode,
detections in eval mode).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

#: Gradient norm clip: from-scratch SSD on a few images sometimes spikes early, steps stay sane.
GRAD_CLIP_NORM = 10.0
#: Batches of training images that recompute BatchNorm statistics (~10 are enough:
#: docs/training.md).
BN_BATCHES = 10
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _to(device: torch.device | str, images: Any, targets: Any, task: str) -> tuple[Any, Any]:
    if task == "detect":
        images = [im.to(device) for im in images]
        targets = [
            {"boxes": t["boxes"].as_subclass(torch.Tensor).to(device),
             "labels": t["labels"].to(device)}
            for t in targets
        ]  # fmt: skip
        return images, targets
    return images.to(device), targets.to(device)


def batch_loss(model: nn.Module, images: Any, targets: Any, task: str, multilabel: bool) -> Any:
    """The scalar loss of one batch (detectors compute their own; they must be in train mode)."""
    if task == "detect":
        return sum(model(images, targets).values())
    return _classifier_loss(model(images), targets, multilabel)


def _classifier_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> Any:
    if multilabel:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.float())
    return nn.functional.cross_entropy(logits, targets)


def _probabilities(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
    return probs.cpu().numpy()


def _detections(images: Any, targets: Any, outputs: Any) -> list[dict[str, np.ndarray]]:
    """Eval-mode detector outputs as numpy, boxes scaled back to each file's pixels."""
    found = []
    for image, target, out in zip(images, targets, outputs, strict=True):
        height, width = target["orig_size"].tolist()
        scale = torch.tensor([width / image.shape[-1], height / image.shape[-2]] * 2)
        found.append({
            "boxes": (out["boxes"].cpu() * scale).numpy(),
            "scores": out["scores"].cpu().numpy(),
            "labels": out["labels"].cpu().numpy().astype(np.int64) - 1,  # drop background
        })  # fmt: skip
    return found


def _loss_mode(model: nn.Module, task: str) -> None:
    """Detectors return losses only in train mode, so they run in train mode with every
    BatchNorm switched to eval: running statistics are used, not updated."""
    model.eval()
    if task == "detect":
        model.train()
        for module in model.modules():
            if isinstance(module, BN_TYPES):
                module.eval()


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device | str,
    *,
    task: str,
    multilabel: bool = False,
    desc: str = "train",
    max_steps: int | None = None,
) -> float:
    """One pass over ``loader``; the scheduler steps per batch. Returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    for step, (images, targets) in enumerate(bar):
        if max_steps is not None and step >= max_steps:
            break
        images, targets = _to(device, images, targets, task)
        loss = batch_loss(model, images, targets, task, multilabel)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        count += 1
        bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return total / max(count, 1)


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, device: torch.device | str, *, task: str,
    multilabel: bool = False,
) -> tuple[float, np.ndarray | list[dict[str, np.ndarray]]]:  # fmt: skip
    """Mean loss and ``predict``'s predictions in one pass, each image loaded once, without
    touching the model's weights or BN statistics. A classifier's eval logits give both; a
    detector runs its loss forward (see ``_loss_mode``) and its eval forward per batch."""
    was_training = model.training
    total, count = 0.0, 0
    scores: list[np.ndarray] = []
    found: list[dict[str, np.ndarray]] = []
    for images, targets in tqdm(loader, desc="validate", leave=False, disable=None):
        on_device, targets_on_device = _to(device, images, targets, task)
        _loss_mode(model, task)
        if task == "detect":
            total += float(batch_loss(model, on_device, targets_on_device, task, multilabel))
            model.eval()
            found += _detections(images, targets, model(on_device))
        else:
            logits = model(on_device)
            total += float(_classifier_loss(logits, targets_on_device, multilabel))
            scores.append(_probabilities(logits, multilabel))
        count += 1
    model.train(was_training)
    loss = total / max(count, 1)
    if task == "detect":
        return loss, found
    return loss, np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device | str, *, task: str,
    multilabel: bool = False, desc: str = "predict",
) -> np.ndarray | list[dict[str, np.ndarray]]:  # fmt: skip
    """Predictions for every item of ``loader`` in order, as plain numpy for trainer.metrics.

    Classifiers: (N, C) probabilities (softmax, or sigmoid when multilabel). Detectors: one dict
    per image with ``boxes`` (xyxy in the file's pixels), ``scores`` and ``labels`` 0..C-1.
    """
    model.eval()
    scores: list[np.ndarray] = []
    found: list[dict[str, np.ndarray]] = []
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=None):
        if task != "detect":
            scores.append(_probabilities(model(images.to(device)), multilabel))
            continue
        found += _detections(images, targets, model([im.to(device) for im in images]))
    if task == "detect":
        return found
    return np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module, loader: Iterable[Any], batches: int = BN_BATCHES,
    device: torch.device | str = "cpu",
) -> int:  # fmt: skip
    """Replace BatchNorm running statistics by their plain average over ``batches`` batches.

    torchvision's MobileNets use BN momentum 0.01 (SSDLite 0.03): after a short run the running
    statistics still mostly hold their initial values and eval-mode accuracy collapses
    (docs/training.md: 0.155 -> 1.0 after this). Only BN layers run in train mode, so dropout and
    detection post-processing stay off. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    if not norms:
        return 0
    was_training = model.training
    saved = [m.momentum for m in norms]
    model.eval()
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative moving average: every batch weighs the same
        module.train()
    used = 0
    for images, _targets in loader:
        if used >= batches:
            break
        _bn_forward(model, images, device)
        used += 1
    for module, momentum in zip(norms, saved, strict=True):
        module.momentum = momentum
    model.train(was_training)
    return used


def _bn_forward(model: nn.Module, images: Any, device: torch.device | str) -> None:
    """Forward the layers that hold BN; for SSD, skip anchors, losses and NMS."""
    if not isinstance(images, torch.Tensor):  # a detector's list of images
        batch, _ = model.transform([im.to(device) for im in images])  # type: ignore[operator]
        features = list(model.backbone(batch.tensors).values())  # type: ignore[operator]
        model.head(features)  # type: ignore[operator]
        return
    model(images.to(device))
