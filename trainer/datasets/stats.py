"""Counts behind ``edge-trainer inspect``: per class, per split, image sizes, and warnings.

The minimums are rules of thumb for fine-tuning a pretrained MobileNet/SSDLite: below them a
class is usually learnt poorly, or its validation numbers are too noisy to trust.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from trainer.datasets.core import Dataset

#: Images per class below which a classifier usually underfits that class.
MIN_IMAGES_PER_CLASS = 30
#: Box instances per class below which a detector usually misses that class.
MIN_INSTANCES_PER_CLASS = 50


@dataclass
class Summary:
    """What inspect prints; counts are keyed by class, and by (split, class) per split."""

    task: str
    classes: list[str]
    images: int
    split_images: dict[str, int]
    images_per_class: Counter[str]
    boxes_per_class: Counter[str]
    split_counts: dict[str, Counter[str]]  # per split: images (classify) or boxes (detect)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    background_images: int = 0  # detection images with no box, classification with no label


def summarize(dataset: Dataset) -> Summary:
    images_per_class: Counter[str] = Counter()
    boxes_per_class: Counter[str] = Counter()
    split_counts: dict[str, Counter[str]] = {}
    split_images: dict[str, int] = {}
    background = 0
    for split, members in dataset.by_split().items():
        split_images[split] = len(members)
        counts = split_counts.setdefault(split, Counter())
        for sample in members:
            names = [b.label for b in sample.boxes] if dataset.task == "detect" else sample.labels
            boxes_per_class.update(names if dataset.task == "detect" else [])
            images_per_class.update(set(names))
            counts.update(names)
            background += not names
    return Summary(
        task=dataset.task,
        classes=list(dataset.classes),
        images=len(dataset.samples),
        split_images=split_images,
        images_per_class=images_per_class,
        boxes_per_class=boxes_per_class,
        split_counts=split_counts,
        widths=[s.width for s in dataset.samples],
        heights=[s.height for s in dataset.samples],
        background_images=background,
    )


def size_range(values: list[int]) -> tuple[int, float, int]:
    """(min, median, max); zeros for an empty list."""
    if not values:
        return 0, 0.0, 0
    return min(values), float(statistics.median(values)), max(values)


def warnings(summary: Summary) -> list[str]:
    """Classes below the usual minimums, and classes missing from a split."""
    out: list[str] = []
    if summary.task == "classify":
        minimum, counts, unit = MIN_IMAGES_PER_CLASS, summary.images_per_class, "images"
    else:
        minimum, counts, unit = MIN_INSTANCES_PER_CLASS, summary.boxes_per_class, "boxes"
    for name in summary.classes:
        if counts[name] < minimum:
            out.append(
                f"class {name!r} has {counts[name]} {unit}, below the usual minimum of {minimum}"
            )
    for split, counts_in_split in summary.split_counts.items():
        missing = [c for c in summary.classes if counts_in_split[c] == 0]
        if split and missing and summary.split_images.get(split):
            out.append(f"split {split!r} has no {unit} of {missing}")
    return out
