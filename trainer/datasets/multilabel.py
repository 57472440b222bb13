"""Multi-label CSV: a header ``path,labels`` then ``images/a.jpg,cat;dog`` (labels may be empty).

Paths are relative to the CSV's folder. A folder holding ``train.csv``/``val.csv``/``test.csv`` is
split by file; ``labels.csv`` (or any other name) is unsplit. ``classes.txt`` beside the CSV fixes
the class list and order (and lets a class with no positive image exist); without it classes are
the sorted labels found.
"""

from __future__ import annotations

import csv
from pathlib import Path

from trainer.datasets.core import Dataset, DatasetError, Sample, check, normalise_split
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
            "multilabel holds image-level labels; a detection dataset cannot become one without "
            "dropping its boxes"
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
