"""YOLO (Ultralytics) detection: ``images/<split>/``, ``labels/<split>/<stem>.txt``, ``data.yaml``.

A label line is ``class cx cy w h`` normalised to [0, 1]; an odd number of values >= 7 is a
segmentation polygon and is read as its bounding box. An image without a label file is a
background image. ``data.yaml`` keys: ``path`` (root; relative means relative to the YAML's
folder), ``train``/``val``/``test`` (a folder, a .txt list of images, or a list of either) and
``names`` (a list or ``{id: name}``). Without a YAML, ``classes.txt`` names the classes and every
folder under ``images/`` is a split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainer.datasets.core import (
    BOX_SLACK_PX,
    Box,
    Dataset,
    DatasetError,
    Sample,
    check,
    normalise_split,
)
from trainer.datasets.files import (
    ImageMode,
    UniqueNames,
    place_image,
    prepare_output,
    read_class_list,
    relative,
)
from trainer.datasets.imagesize import is_image, read_size

DATA_YAML = "data.yaml"
YOLO_SPLITS = ("train", "val", "test")
#: Decimals for normalised coordinates: 1e-6 of a 4000 px image is 0.004 px.
COORD_DECIMALS = 6


def find_yaml(path: Path) -> Path | None:
    if path.is_file():
        return path
    if (path / DATA_YAML).is_file():
        return path / DATA_YAML
    return next(iter(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))), None)


def load(path: Path, slack_px: float = BOX_SLACK_PX) -> Dataset:
    """Load a YOLO dataset from its data.yaml or folder; raise DatasetError listing problems.

    ``slack_px``: how far a box may leave the image (see ``core.check``).
    """
    problems: list[str] = []
    yaml_path = find_yaml(path)
    if yaml_path is None:
        root = path
        classes = read_class_list(root / "classes.txt")
        if classes is None or not (root / "images").is_dir():
            raise DatasetError(f"{path}: expected data.yaml, or images/ and classes.txt (YOLO)")
        subdirs = sorted(p for p in (root / "images").iterdir() if p.is_dir())
        sources = {p.name: [p] for p in subdirs} or {"": [root / "images"]}
    else:
        root, classes, sources = _read_yaml(yaml_path, problems)
    samples: list[Sample] = []
    splits: dict[str, str] = {}
    seen_dirs: set[Path] = set()
    declared_in = yaml_path.name if yaml_path else "images/"
    for raw_split, entries in sources.items():
        split = normalise_split(raw_split)
        for entry in entries:
            if entry.is_dir() and entry.resolve() in seen_dirs:
                continue  # val: images/train is a common "no val split" idiom: load it once
            seen_dirs.add(entry.resolve())
            splits.setdefault(
                split, f"{declared_in} ({raw_split or 'images'}: {relative(entry, root)})"
            )
            samples.extend(_load_entry(root, entry, split, classes, problems))
    return check(Dataset("detect", classes, samples, splits=splits), problems, slack_px)


def _read_yaml(yaml_path: Path, problems: list[str]) -> tuple[Path, list[str], dict[str, list]]:
    name = yaml_path.name
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{name}: not readable as YAML: {exc}") from exc
    if not isinstance(doc, dict) or "names" not in doc or "train" not in doc:
        raise DatasetError(f"{name}: expected a mapping with 'train', 'val' and 'names'")
    names = doc["names"]
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            problems.append(f"{name}: names ids {sorted(names)}: expected 0..{len(names) - 1}")
        classes = [str(names[k]) for k in sorted(names)]
    elif isinstance(names, list):
        classes = [str(n) for n in names]
    else:
        raise DatasetError(f"{name}: 'names' must be a list or {{id: name}}, got {names!r}")
    if "nc" in doc and doc["nc"] != len(classes):
        problems.append(f"{name}: nc is {doc['nc']} but 'names' has {len(classes)} entries")
    root = yaml_path.parent
    if doc.get("path"):
        given = Path(str(doc["path"]))
        candidate = given if given.is_absolute() else yaml_path.parent / given
        # a moved dataset keeps its old absolute path: fall back to the YAML's folder
        root = candidate if candidate.is_dir() else yaml_path.parent
    sources: dict[str, list[Path]] = {}
    for key in YOLO_SPLITS:
        value = doc.get(key)
        if value:
            values = value if isinstance(value, list) else [value]
            sources[key] = [root / str(v) for v in values]
    return root, classes, sources


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _load_entry(
    root: Path, entry: Path, split: str, classes: list[str], problems: list[str]
) -> list[Sample]:
    if entry.is_dir():
        images = sorted(p for p in entry.rglob("*") if p.is_file() and is_image(p))
        label_dir = _label_path(entry / "x").parent
        stems = {relative(p.with_suffix(""), entry) for p in images}
        for orphan in sorted(label_dir.rglob("*.txt")) if label_dir.is_dir() else []:
            if relative(orphan.with_suffix(""), label_dir) not in stems:
                problems.append(
                    f"{relative(orphan, root)}: missing image: expected an image named "
                    f"{orphan.stem}.* in {relative(entry, root)}"
                )
    elif entry.suffix == ".txt" and entry.is_file():
        lines = entry.read_text(encoding="utf-8").splitlines()
        images = [(root / ln.strip()) for ln in lines if ln.strip()]
    else:
        problems.append(f"{split}: {entry}: expected a folder of images or a .txt list")
        return []
    return [_load_image(root, image, split, classes, problems) for image in images]


def _load_image(
    root: Path, image: Path, split: str, classes: list[str], problems: list[str]
) -> Sample:
    label_path = _label_path(image)
    try:
        width, height = read_size(image)
    except (OSError, ValueError):
        width = height = 0  # validate() reports the missing or unreadable image
    origin = relative(label_path if label_path.is_file() else image, root)
    sample = Sample(image, width, height, split=split, origin=origin)
    if not label_path.is_file():
        return sample
    for line_no, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), 1):
        values = line.split()
        if not values:
            continue
        where = f"{origin} line {line_no}"
        try:
            class_id, coords = int(values[0]), [float(v) for v in values[1:]]
        except ValueError:
            problems.append(f"{where}: expected 'class cx cy w h' numbers, got {line.strip()!r}")
            continue
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            problems.append(f"{where}: expected 5 values 'class cx cy w h', got {len(values)}")
            continue
        if not 0 <= class_id < len(classes):
            problems.append(
                f"{where}: unknown class id {class_id}: expected 0..{len(classes) - 1} "
                f"({', '.join(classes)})"
            )
            continue
        if len(coords) == 4:
            cx, cy, w, h = coords
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        else:  # polygon x1 y1 x2 y2 ...: its bounding box
            xs, ys = coords[0::2], coords[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        xyxy = (x1 * width, y1 * height, x2 * width, y2 * height)
        sample.boxes.append(Box(xyxy, classes[class_id], origin=where))
    return sample


def save(dataset: Dataset, out: Path, images: ImageMode = "copy") -> None:
    """Write ``dataset`` as YOLO with a data.yaml whose ``path`` is the absolute output folder."""
    if dataset.task != "detect":
        raise DatasetError(f"yolo holds detection boxes; this dataset's task is {dataset.task}")
    groups = dataset.by_split()
    bad = [s for s in groups if s and s not in YOLO_SPLITS]
    if bad:
        raise DatasetError(
            f"yolo data.yaml has only {list(YOLO_SPLITS)} splits, got {bad}: "
            "re-split with --val-fraction"
        )
    prepare_output(out)
    class_ids = {name: i for i, name in enumerate(dataset.classes)}
    for split, members in groups.items():
        sub = split or "train"  # an unsplit dataset is all training data
        names = UniqueNames()
        for sample in members:
            file_name = names.claim(sample.image_path.name)
            place_image(sample.image_path, out / "images" / sub / file_name, images)
            label = out / "labels" / sub / Path(file_name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(_label_text(sample, class_ids), encoding="utf-8")
    doc: dict[str, Any] = {"path": str(out.resolve())}
    for key in YOLO_SPLITS:
        if key in groups or (key == "train" and "" in groups):
            doc[key] = f"images/{key}"
    doc.setdefault("val", doc.get("train"))  # Ultralytics requires val; reuse train if none
    doc["nc"] = len(dataset.classes)
    doc["names"] = dict(enumerate(dataset.classes))
    header = "# written by edge-trainer; val = train means the dataset had no val split\n"
    (out / DATA_YAML).write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _label_text(sample: Sample, class_ids: dict[str, int]) -> str:
    lines = []
    w, h = sample.width, sample.height
    for box in sample.boxes:
        x1, y1, x2, y2 = box.xyxy
        values = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
        lines.append(
            f"{class_ids[box.label]} " + " ".join(f"{v:.{COORD_DECIMALS}f}" for v in values)
        )
    return "".join(f"{line}\n" for line in lines)
