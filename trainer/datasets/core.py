"""The one sample type every dataset format loads into and saves from, and its validation.

Boxes are ``xyxy`` in pixels of the stored image (x2, y2 exclusive edges, floats), the same
convention as ``edge_agent.types.Detections``, so nothing downstream converts again.
Validation collects every problem before raising, because fixing a 5 000-image export one error
per run is how a dataset gets abandoned.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from trainer.datasets.imagesize import UnreadableImageError, read_size
from trainer.errors import InputError

Task = Literal["classify", "detect"]

#: A box may stick out of the image by this much (pixels) and is clipped; further out is an error.
#: Annotation tools round to whole pixels and VOC is 1-based, so off-by-one is everyday noise.
BOX_SLACK_PX = 1.0
#: How many problems a DatasetError message lists before "and N more".
MAX_LISTED_PROBLEMS = 20
#: Split names and the spellings of other tools that mean the same split (Roboflow: "valid").
NO_IMAGES = "dataset has no images"
#: Names exporters give to "all images, no split" (CVAT writes instances_default.json).
UNSPLIT_NAMES = frozenset({"", "default", "all"})
SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


class DatasetError(InputError):
    """Unusable dataset: ``problems`` holds every finding, the message a capped list."""

    def __init__(self, problems: list[str] | str, header: str = "invalid dataset") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(format_problems(self.problems, header))


def format_problems(problems: list[str], header: str = "invalid dataset") -> str:
    """One problem as is; several as a numbered-free bullet list capped at MAX_LISTED_PROBLEMS."""
    if len(problems) == 1:
        return problems[0]
    shown = problems[:MAX_LISTED_PROBLEMS]
    lines = [f"{header}: {len(problems)} problems"] + [f"  - {p}" for p in shown]
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    return "\n".join(lines)


@dataclass
class Box:
    """One object: ``xyxy`` pixels (x1, y1, x2, y2), its class name, where it was read from."""

    xyxy: tuple[float, float, float, float]
    label: str
    difficult: bool = False  # VOC "difficult" / COCO iscrowd: kept, but an ignore region
    origin: str = ""  # e.g. "labels/train/a.txt line 3", "instances.json annotation id 7"

    @property
    def width(self) -> float:
        return self.xyxy[2] - self.xyxy[0]

    @property
    def height(self) -> float:
        return self.xyxy[3] - self.xyxy[1]


@dataclass
class Sample:
    """One image: classification ``labels`` or detection ``boxes``, and its split ("" = none)."""

    image_path: Path
    width: int
    height: int
    labels: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    split: str = ""
    origin: str = ""  # the annotation file (and line) that named this image, for messages

    @property
    def where(self) -> str:
        """How messages name this sample: its annotation source, else the image path."""
        return self.origin or str(self.image_path)


@dataclass
class Dataset:
    """Samples of one task.

    ``splits`` maps each declared split to the file or folder declaring it, so an empty split
    (a ``val.txt`` listing nothing) is still known, and reported with its file.
    """

    task: Task
    classes: list[str]
    samples: list[Sample]
    multilabel: bool = False
    splits: dict[str, str] = field(default_factory=dict)

    def split_names(self) -> list[str]:
        """Declared splits first, then any split only the samples name, in first-seen order."""
        names = list(self.splits)
        for sample in self.samples:
            if sample.split not in names:
                names.append(sample.split)
        return names

    def by_split(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {name: [] for name in self.split_names()}
        for sample in self.samples:
            out[sample.split].append(sample)
        return out


def normalise_split(name: str) -> str:
    """Map other tools' spellings ("valid", COCO's "train2017", CVAT's "default" = none) to ours."""
    key = name.lower()
    if key in UNSPLIT_NAMES:
        return ""
    return SPLIT_ALIASES.get(key) or SPLIT_ALIASES.get(key.rstrip("0123456789"), name)


def clip_boxes(dataset: Dataset, slack_px: float = BOX_SLACK_PX) -> None:
    """Clip, in place, boxes that leave the image by at most ``slack_px``; leave worse ones be."""
    for sample in dataset.samples:
        w, h = sample.width, sample.height
        if w <= 0 or h <= 0:
            continue
        for i, box in enumerate(sample.boxes):
            x1, y1, x2, y2 = box.xyxy
            if min(x1, y1) >= -slack_px and x2 <= w + slack_px and y2 <= h + slack_px:
                clipped = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
                if clipped != box.xyxy:
                    sample.boxes[i] = replace(box, xyxy=clipped)


def validate(dataset: Dataset, slack_px: float = BOX_SLACK_PX) -> list[str]:
    """Every problem found, each naming the file (and line or id) and what was expected."""
    problems: list[str] = []
    known = set(dataset.classes)
    dupes = [name for name, n in Counter(dataset.classes).items() if n > 1]
    if dupes:
        problems.append(f"class list: duplicate class names {dupes}: expected each name once")
    if not dataset.samples:
        problems.append(f"{NO_IMAGES}: expected at least one")
    seen: dict[Path, str] = {}
    for sample in dataset.samples:
        problems.extend(_image_problems(sample))
        key = sample.image_path.resolve()
        if key in seen:
            problems.append(
                f"{sample.where}: duplicate image {sample.image_path.name}: "
                f"already used by {seen[key]}; expected each image once"
            )
        else:
            seen[key] = sample.where
        if dataset.task == "classify":
            problems.extend(_label_problems(sample, known, dataset.multilabel, dataset.classes))
        else:
            problems.extend(_box_problems(sample, known, dataset.classes, slack_px))
    problems.extend(_split_problems(dataset))
    return problems


def _image_problems(sample: Sample) -> list[str]:
    path = sample.image_path
    try:
        width, height = read_size(path)
    except FileNotFoundError:
        return [f"{sample.where}: missing image: expected a file at {path}"]
    except (UnreadableImageError, OSError):
        return [f"{sample.where}: unreadable image: expected an image OpenCV can decode at {path}"]
    if (sample.width, sample.height) != (width, height):
        return [
            f"{sample.where}: image size mismatch for {path.name}: annotation says "
            f"{sample.width}x{sample.height}, the file is {width}x{height}"
        ]
    return []


def _label_problems(s: Sample, known: set[str], multilabel: bool, classes: list[str]) -> list[str]:
    out = [
        f"{s.where}: unknown class {label!r}: expected one of {classes}"
        for label in s.labels
        if label not in known
    ]
    if not multilabel and len(s.labels) != 1:
        out.append(f"{s.where}: expected exactly one label for {s.image_path.name}, got {s.labels}")
    return out


def _box_problems(s: Sample, known: set[str], classes: list[str], slack_px: float) -> list[str]:
    out: list[str] = []
    for box in s.boxes:
        where = box.origin or s.where
        coords = "(" + ", ".join(f"{v:.1f}" for v in box.xyxy) + ")"
        if box.label not in known:
            out.append(f"{where}: unknown class {box.label!r}: expected one of {classes}")
        x1, y1, x2, y2 = box.xyxy
        if x2 <= x1 or y2 <= y1:
            out.append(f"{where}: zero-area box {coords}: expected x1 < x2 and y1 < y2")
        elif (
            s.width > 0
            and s.height > 0
            and (min(x1, y1) < -slack_px or x2 > s.width + slack_px or y2 > s.height + slack_px)
        ):
            out.append(
                f"{where}: box outside the image: expected xyxy within 0..{s.width} x "
                f"0..{s.height} (+-{slack_px:g} px), got {coords}"
            )
    return out


def _split_problems(dataset: Dataset) -> list[str]:
    out: list[str] = []
    groups = dataset.by_split()
    for name, members in groups.items():
        if not members:
            where = dataset.splits.get(name) or "dataset"
            out.append(f"{where}: split {name or '(none)'!r} is empty: expected at least one image")
    named = [n for n in groups if n]
    if "" in groups and named and groups[""]:
        out.append(
            f"{len(groups[''])} images have no split while others are in {named}: "
            f"expected every image in a split, e.g. {groups[''][0].where}"
        )
    return out


def check(
    dataset: Dataset, problems: list[str] | None = None, slack_px: float = BOX_SLACK_PX
) -> Dataset:
    """Clip boxes within BOX_SLACK_PX, validate, and raise DatasetError with every problem found.

    ``slack_px`` is how far a box may leave the image and still pass; ``math.inf`` keeps boxes
    that leave the frame (unclipped), for ``multilabel.from_boxes`` to measure how much is inside.
    """
    clip_boxes(dataset)
    found = list(problems or [])
    # "no images" only restates a parse failure already listed
    found += [p for p in validate(dataset, slack_px) if not (found and p.startswith(NO_IMAGES))]
    if found:
        raise DatasetError(found)
    return dataset


def split(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A copy with every sample in "train" or "val", replacing any split it had.

    Deterministic by seed and independent of load order (samples are sorted by path first).
    Stratified by each sample's rarest class so small classes reach val too; a stratum of one
    image stays in train.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), but got {val_fraction}")
    samples = sorted(dataset.samples, key=lambda s: str(s.image_path))
    freq = Counter(name for s in samples for name in _names(s))
    strata: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        names = _names(sample)
        key = min(names, key=lambda n: (freq[n], n)) if names else ""
        strata[key].append(sample)
    rng = random.Random(seed)
    keys = sorted(strata)
    quota = {k: len(strata[k]) * val_fraction for k in keys}
    n_val = {k: min(int(quota[k]), len(strata[k]) - 1) for k in keys}
    # largest remainder: the total matches round(N * val_fraction) as far as strata allow
    spare = round(len(samples) * val_fraction) - sum(n_val.values())
    for k in sorted(keys, key=lambda k: (n_val[k] - quota[k], k)):
        if spare > 0 and n_val[k] < len(strata[k]) - 1:
            n_val[k] += 1
            spare -= 1
    val_ids: set[int] = set()
    for key in keys:
        members = strata[key]
        rng.shuffle(members)
        val_ids.update(id(s) for s in members[: n_val[key]])
    out = [replace(s, split="val" if id(s) in val_ids else "train") for s in dataset.samples]
    used = {s.split for s in out}
    return replace(dataset, samples=out, splits={n: "" for n in ("train", "val") if n in used})


def _names(sample: Sample) -> set[str]:
    return set(sample.labels) | {b.label for b in sample.boxes}
