"""Multi-label CSV: a header ``path,labels`` then ``images/a.jpg,cat;dog`` (labels may be empty).

Paths are relative to the CSV's folder. A folder holding ``train.csv``/``val.csv``/``test.csv`` is
split by file; ``labels.csv`` (or any other name) is unsplit. ``classes.txt`` beside the CSV fixes
the class list and order (and lets a class with no positive image exist); without it classes are
the sorted labels found.

``from_boxes`` turns a detection dataset into this one: an image's labels are the classes of its
boxes that are visible enough (see ``MIN_VISIBLE`` and ``MIN_AREA``).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from trainer.datasets.core import Box, Dataset, DatasetError, Sample, check, normalise_split
from trainer.datasets.files import (
    ImageMode,
    UniqueNames,
    check_class_names,
    place_image,
    prepare_output,
    read_class_list,
    relative,
    write_class_list,
)
from trainer.datasets.imagesize import read_size

HEADER = ["path", "labels"]
LABEL_SEP = ";"
UNSPLIT_CSV = "labels.csv"
CLASSES_FILE = "classes.txt"
#: A box names its class as present when at least this share of its area lies inside the image.
#: 0.3 is the share ``edge-trainer synth`` needs to label an object at all (trainer.synth
#: MIN_VISIBLE), so synth boxes converted here get the labels ``synth --format multilabel`` gives.
MIN_VISIBLE = 0.3
#: ... and when its part inside the image covers at least this share of the image. 0 (off): the
#: usual image labels of COCO (multilabel benchmarks) count every annotated object, however small.
MIN_AREA = 0.0


def find_csv(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.csv"))


def load(path: Path) -> Dataset:
    """Load one CSV or a folder of per-split CSVs; raise DatasetError listing all problems."""
    files = find_csv(path)
    if not files:
        raise DatasetError(f"{path}: no CSV found: expected {UNSPLIT_CSV} or train.csv/val.csv")
    problems: list[str] = []
    samples: list[Sample] = []
    splits: dict[str, str] = {}
    for csv_path in files:
        stem = normalise_split(csv_path.stem)
        split = stem if stem in ("train", "val", "test") else ""
        if split:
            splits[split] = csv_path.name
        samples.extend(_load_csv(csv_path, split, problems))
    fixed = read_class_list(files[0].parent / CLASSES_FILE)
    found = sorted({label for s in samples for label in s.labels})
    classes = fixed if fixed is not None else found
    return check(Dataset("classify", classes, samples, multilabel=True, splits=splits), problems)


def _load_csv(csv_path: Path, split: str, problems: list[str]) -> list[Sample]:
    base = csv_path.parent
    try:
        rows = list(csv.reader(csv_path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{csv_path.name}: not readable as CSV: {exc}")
        return []
    if not rows or [c.strip().lower() for c in rows[0]] != HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        problems.append(f"{csv_path.name} line 1: expected the header 'path,labels', got {got!r}")
        return []
    samples = []
    for line_no, row in enumerate(rows[1:], 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{csv_path.name} line {line_no}"
        if len(row) != 2 or not row[0].strip():
            problems.append(f"{where}: expected 2 columns 'path,labels', got {len(row)}: {row}")
            continue
        image = base / row[0].strip()
        labels = list(dict.fromkeys(x.strip() for x in row[1].split(LABEL_SEP) if x.strip()))
        try:
            width, height = read_size(image)
        except (OSError, ValueError):
            width = height = 0  # validate() reports the missing or unreadable image
        samples.append(Sample(image, width, height, labels, [], split, where))
    return samples


def save(dataset: Dataset, out: Path, images: ImageMode = "copy") -> None:
    """Write images under ``images/<split>/`` and one CSV per split, plus classes.txt."""
    if dataset.task != "classify":
        raise DatasetError(
            "multilabel holds image-level labels; make them from a detection dataset's boxes "
            "with from_boxes() (edge-trainer convert --to multilabel)"
        )
    check_class_names(dataset.classes, "multilabel", LABEL_SEP + ",")
    prepare_output(out)
    write_class_list(out / CLASSES_FILE, dataset.classes)
    for split, members in dataset.by_split().items():
        image_dir = out / "images" / split if split else out / "images"
        names = UniqueNames()
        csv_path = out / (f"{split}.csv" if split else UNSPLIT_CSV)
        with csv_path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(HEADER)
            for sample in members:
                dest = image_dir / names.claim(sample.image_path.name)
                place_image(sample.image_path, dest, images)
                writer.writerow([relative(dest, out), LABEL_SEP.join(sample.labels)])


def inside_fraction(box: Box, width: int, height: int) -> float:
    """The share of ``box``'s area inside a ``width`` x ``height`` image (0 for a flat box)."""
    x1, y1, x2, y2 = box.xyxy
    inside_w = max(0.0, min(x2, width) - max(x1, 0.0))
    inside_h = max(0.0, min(y2, height) - max(y1, 0.0))
    area = box.width * box.height
    return inside_w * inside_h / area if area > 0 else 0.0


def counts_as_label(box: Box, width: int, height: int, min_visible: float, min_area: float) -> bool:
    """Whether ``box`` makes its class an image label: enough of it inside, and big enough.

    A box wholly outside the image never counts, whatever ``min_visible`` is. A difficult
    (VOC) or crowd (COCO) box counts: the object is in the image, so calling the image a
    negative for its class would be wrong.
    """
    inside = inside_fraction(box, width, height)
    image_area = width * height
    return (
        inside > 0
        and inside >= min_visible
        and inside * box.width * box.height >= min_area * image_area
    )


def from_boxes(
    dataset: Dataset, min_visible: float = MIN_VISIBLE, min_area: float = MIN_AREA
) -> tuple[Dataset, int]:
    """A multilabel copy of a detection dataset, and how many boxes did not count.

    An image's labels are the classes of its boxes that pass ``counts_as_label``, each class once,
    in class order. An image left without labels stays, with an empty label set: a negative
    example, which a multilabel classifier needs as much as positives. Classes, splits and image
    paths are kept.
    """
    for name, value in (("min_visible", min_visible), ("min_area", min_area)):
        if not 0.0 <= value <= 1.0:  # also refuses nan
            raise DatasetError(f"{name} must be a fraction in [0, 1], but got {value}")
    if dataset.task != "detect":
        raise DatasetError(f"from_boxes needs a detection dataset, got a {dataset.task} one")
    order = {name: i for i, name in enumerate(dataset.classes)}
    samples, dropped = [], 0
    for sample in dataset.samples:
        w, h = sample.width, sample.height
        kept = [b for b in sample.boxes if counts_as_label(b, w, h, min_visible, min_area)]
        dropped += len(sample.boxes) - len(kept)
        labels = sorted({b.label for b in kept}, key=lambda name: order.get(name, len(order)))
        samples.append(replace(sample, labels=labels, boxes=[]))
    out = Dataset("classify", list(dataset.classes), samples, True, dict(dataset.splits))
    return out, dropped
