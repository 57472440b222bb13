"""Named augmentation policies on torchvision.transforms.v2, as references/detection/presets.py.

A preset takes a ``tv_tensors.Image`` (uint8, CHW, RGB) and, for detection, a target dict with
``boxes`` (``tv_tensors.BoundingBoxes``, XYXY pixels) and ``labels``; geometric transforms move
the boxes with the pixels and ``SanitizeBoundingBoxes`` drops the ones they crush. Every preset
ends by stretching to ``size`` x ``size`` (the bundle's ``resize: stretch``) and scaling to
float [0, 1]; classifiers then normalise with ImageNet's mean/std, SSD does it inside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from trainer.errors import InputError
from trainer.models import IMAGENET_MEAN_STD, Task

PRESETS = ("none", "light", "default", "strong")
#: Boxes smaller than this after a crop or zoom are dropped as unlearnable, pixels.
MIN_BOX_SIDE_PX = 2.0
#: Fill for zoom-out borders, RGB uint8 (ImageNet mean): a neutral grey the net sees as "nothing".
ZOOM_OUT_FILL = (124, 116, 104)


def get_preset(name: str, task: Task, size: int, train: bool = True) -> Callable[..., Any]:
    """The transform for ``name``; ``train=False`` gives the deterministic evaluation one."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}: expected one of {list(PRESETS)}")
    if size < 32:
        raise InputError(f"size must be at least 32 pixels, got {size}")
    policy = name if train else "none"
    steps = _detection(policy) if task == "detect" else _classification(policy, size)
    # antialias=False: the device resizes with plain bilinear (OpenCV), so train on the same.
    steps += [v2.Resize((size, size), antialias=False), v2.ToDtype(torch.float32, scale=True)]
    if task == "detect":
        steps.append(v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIDE_PX))
    else:
        mean, std = IMAGENET_MEAN_STD
        steps.append(v2.Normalize(mean, std))
    return v2.Compose(steps)


def _classification(policy: str, size: int) -> list[Any]:
    if policy == "none":
        return []
    if policy == "light":
        return [
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=False),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.1, 0.1, 0.1),
        ]
    strong = policy == "strong"
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=(0.4 if strong else 0.6, 1.0), antialias=False),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(15 if strong else 8),
        v2.ColorJitter(0.4, 0.4, 0.4, 0.05) if strong else v2.ColorJitter(0.25, 0.25, 0.25, 0.02),
    ]
    if strong:
        steps += [
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
        ]
    return steps


def _detection(policy: str) -> list[Any]:
    """SSD's recipe (photometric distort, zoom out, IoU crop, flip) scaled by ``policy``."""
    if policy == "none":
        return []
    if policy == "light":
        return [v2.RandomHorizontalFlip(), v2.ColorJitter(0.15, 0.15, 0.15)]
    strong = policy == "strong"
    steps: list[Any] = [
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(
            fill=ZOOM_OUT_FILL, side_range=(1.0, 2.0 if strong else 1.5), p=0.5 if strong else 0.3
        ),
        v2.RandomApply([v2.RandomIoUCrop()], p=0.6 if strong else 0.4),
        v2.RandomHorizontalFlip(),
        # Rotating a box returns its enclosing box, a little loose: keep the angles small.
        v2.RandomApply([v2.RandomRotation(8 if strong else 4, fill=ZOOM_OUT_FILL)], p=0.3),
        v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIDE_PX),
    ]
    if strong:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2))
    return steps
