"""torch Datasets over ``trainer.datasets`` samples, and their collate functions.

Classification yields ``(image, target)``: a class index (multiclass) or a multi-hot float vector
(multilabel). Detection yields ``(image, {"boxes", "labels", "orig_size"})`` with labels 1..C,
because torchvision's SSD reserves 0 for background; ``orig_size`` (H, W of the file) maps
predictions on the resized input back to the file's pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torchvision import tv_tensors

from trainer.datasets import Sample
from trainer.errors import InputError

#: Labels of detection targets start here: torchvision SSD's class 0 is background.
FIRST_DETECTION_LABEL = 1


def read_rgb(sample: Sample) -> tv_tensors.Image:
    """The sample's image as uint8 CHW RGB; OpenCV reads what the dataset loaders validated."""
    bgr = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{sample.image_path}: cannot read image")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))


class ClassificationData(TorchDataset):
    """Samples with ``labels`` -> (float CHW image, class index or multi-hot vector)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        transform: Callable[..., Any],
        multilabel: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.index = {name: i for i, name in enumerate(classes)}
        self.transform = transform
        self.multilabel = multilabel

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, sample: Sample) -> torch.Tensor:
        ids = [self.index[name] for name in sample.labels]
        if self.multilabel:
            hot = torch.zeros(len(self.index))
            hot[ids] = 1.0
            return hot
        if len(ids) != 1:
            raise InputError(f"{sample.where}: expected exactly one label, got {sample.labels}")
        return torch.tensor(ids[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[i]
        return self.transform(read_rgb(sample)), self.target(sample)


class DetectionData(TorchDataset):
    """Samples with ``boxes`` -> (float CHW image, target dict for torchvision detectors).

    Boxes flagged ``difficult`` are left out of training (they are ignore regions in COCO
    evaluation, not objects the net must find).
    """

    def __init__(
        self, samples: Sequence[Sample], classes: Sequence[str], transform: Callable[..., Any]
    ) -> None:
        self.samples = list(samples)
        self.index = {name: i + FIRST_DETECTION_LABEL for i, name in enumerate(classes)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sample = self.samples[i]
        image = read_rgb(sample)
        boxes = [b for b in sample.boxes if not b.difficult]
        xyxy = torch.tensor([b.xyxy for b in boxes], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                xyxy, format="XYXY", canvas_size=(image.shape[-2], image.shape[-1])
            ),
            "labels": torch.tensor([self.index[b.label] for b in boxes], dtype=torch.int64),
        }
        image, target = self.transform(image, target)
        target["orig_size"] = torch.tensor([sample.height, sample.width])
        return image, target


def collate_detection(batch: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """Lists of images and targets, as torchvision detectors take them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from torch's per-worker seed."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed + worker_id)
