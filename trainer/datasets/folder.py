"""Class folders, one class per image: ``root/<split>/<class>/*.jpg`` or ``root/<class>/*.jpg``.

The torchvision ImageFolder convention: classes are the sorted folder names, images are found
recursively inside a class folder, other files are ignored. The split layout is used when every
top-level folder is a split name (train, val/valid/validation, test).
"""

from __future__ import annotations

from pathlib import Path

from trainer.datasets.core import Dataset, DatasetError, Sample, check, normalise_split
from trainer.datasets.files import (
    ImageMode,
    UniqueNames,
    check_class_names,
    place_image,
    prepare_output,
    relative,
)
from trainer.datasets.imagesize import is_image, read_size

SPLIT_NAMES = frozenset({"train", "val", "test"})
#: Characters a class name cannot hold when it is a folder name.
FORBIDDEN_CHARS = "/\\"


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_split_layout(root: Path) -> bool:
    tops = _subdirs(root)
    return bool(tops) and all(normalise_split(p.name) in SPLIT_NAMES for p in tops)


def load(path: Path) -> Dataset:
    """Load class folders; raise DatasetError listing all problems."""
    if not path.is_dir() or not _subdirs(path):
        raise DatasetError(
            f"{path}: expected class folders: <class>/*.jpg or <split>/<class>/*.jpg"
        )
    groups = (
        {normalise_split(p.name): p for p in _subdirs(path)}
        if is_split_layout(path)
        else {"": path}
    )
    classes = sorted({d.name for base in groups.values() for d in _subdirs(base)})
    samples: list[Sample] = []
    for split, base in groups.items():
        for class_dir in _subdirs(base):
            for image in sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image(p)):
                try:
                    width, height = read_size(image)
                except (OSError, ValueError):
                    width = height = 0  # validate() reports the unreadable image
                origin = relative(image, path)
                samples.append(Sample(image, width, height, [class_dir.name], [], split, origin))
    splits = {s: f"{relative(base, path)}/" for s, base in groups.items() if s}
    return check(Dataset("classify", classes, samples, splits=splits))


def save(dataset: Dataset, out: Path, images: ImageMode = "copy") -> None:
    """Write one folder per class (per split); every image must have exactly one label."""
    if dataset.task != "classify":
        raise DatasetError(
            "folders holds one class per image; a detection dataset cannot become class folders "
            "without dropping its boxes (use `edge-trainer synth --format folders` for crops)"
        )
    check_class_names(dataset.classes, "folders", FORBIDDEN_CHARS)
    bad = [s for s in dataset.samples if len(s.labels) != 1]
    if bad:
        listed = ", ".join(f"{s.where} {s.labels}" for s in bad[:5])
        raise DatasetError(
            f"folders needs exactly one label per image; {len(bad)} images have another number "
            f"(e.g. {listed}): keep this dataset as multilabel"
        )
    prepare_output(out)
    for split, members in dataset.by_split().items():
        base = out / split if split else out
        for name in dataset.classes:  # empty classes survive as empty folders
            (base / name).mkdir(parents=True, exist_ok=True)
        names: dict[str, UniqueNames] = {c: UniqueNames() for c in dataset.classes}
        for sample in members:
            label = sample.labels[0]
            file_name = names[label].claim(sample.image_path.name)
            place_image(sample.image_path, base / label / file_name, images)
