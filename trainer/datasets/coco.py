"""COCO object-detection JSON (``instances``): one JSON file per split.

Read: a JSON file, or a folder holding ``annotations/*.json`` or ``<split>/_annotations.coco.json``
(Roboflow's export). ``file_name`` is looked up under ``images/<split>/``, ``<split>/``,
``images/``, the root and the JSON's own folder, in that order.
Written: ``annotations/instances_<split>.json`` and ``images/<split>/<file>`` (``instances.json``
and ``images/`` when the dataset has no split). Category ids are 1..K in class order, as COCO and
torchvision keep 0 for the background.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeGuard

from trainer.datasets.core import (
    BOX_SLACK_PX,
    Box,
    Dataset,
    DatasetError,
    Sample,
    check,
    normalise_split,
)
from trainer.datasets.files import ImageMode, UniqueNames, place_image, prepare_output, relative
from trainer.datasets.imagesize import read_size

ROBOFLOW_JSON = "_annotations.coco.json"
#: Decimals kept for bbox values: 0.01 px is far below any annotator's precision.
BBOX_DECIMALS = 2


def find_json(path: Path) -> list[Path]:
    """The annotation files of a COCO dataset at ``path`` (a file or a folder)."""
    if path.is_file():
        return [path]
    found = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
    return found or sorted(path.glob(f"*/{ROBOFLOW_JSON}")) or sorted(path.glob("*.json"))


def _root_of(json_path: Path) -> Path:
    parent = json_path.parent
    if parent.name == "annotations" or json_path.name == ROBOFLOW_JSON:
        return parent.parent
    return parent


def _raw_split(json_path: Path) -> str:
    """The split as the files spell it ("train2017", "valid"); "" when there is none."""
    stem = json_path.stem
    if stem.startswith("instances_"):
        return stem[len("instances_") :]
    if json_path.name == ROBOFLOW_JSON:
        return json_path.parent.name
    return stem if normalise_split(stem) in ("train", "val", "test") else ""


def load(path: Path, slack_px: float = BOX_SLACK_PX) -> Dataset:
    """Load every COCO JSON at ``path``; raise DatasetError listing all problems.

    ``slack_px``: how far a box may leave the image (see ``core.check``).
    """
    files = find_json(path)
    if not files:
        raise DatasetError(f"{path}: no COCO JSON found: expected annotations/*.json or a .json")
    classes: list[str] = []
    samples: list[Sample] = []
    problems: list[str] = []
    splits: dict[str, str] = {}
    for json_path in files:
        raw = _raw_split(json_path)
        split = normalise_split(raw)
        splits.setdefault(split, relative(json_path, _root_of(json_path)))
        samples.extend(_load_file(json_path, raw, classes, problems))
    return check(Dataset("detect", classes, samples, splits=splits), problems, slack_px)


def _load_file(
    json_path: Path, raw_split: str, classes: list[str], problems: list[str]
) -> list[Sample]:
    root, split = _root_of(json_path), normalise_split(raw_split)
    name = relative(json_path, root)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{name}: not readable as JSON: {exc}")
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        problems.append(f"{name}: expected a JSON object with an 'images' list")
        return []
    cat_names = _categories(doc.get("categories"), name, problems)
    for cat in cat_names.values():
        if cat not in classes:
            classes.append(cat)
    dirs = [root / "images" / raw_split, root / raw_split, root / "images", root, json_path.parent]
    by_id: dict[int, Sample] = {}
    file_names: dict[str, int] = {}
    for i, img in enumerate(doc["images"]):
        where = f"{name} images[{i}]"
        if (
            not isinstance(img, dict)
            or not isinstance(img.get("file_name"), str)
            or not _is_int(img.get("id"))
        ):
            problems.append(f"{where}: expected an object with integer 'id' and 'file_name'")
            continue
        img_id, file_name = int(img["id"]), img["file_name"]
        if img_id in by_id:
            problems.append(f"{name}: duplicate image id {img_id}: expected unique image ids")
            continue
        if file_name in file_names:
            problems.append(
                f"{name} image id {img_id}: duplicate file name {file_name!r} "
                f"(also image id {file_names[file_name]}): expected each file once"
            )
            continue
        file_names[file_name] = img_id
        image_path = next((d / file_name for d in dirs if (d / file_name).is_file()), None)
        image_path = image_path or next((d for d in dirs if d.is_dir()), root) / file_name
        width, height = img.get("width"), img.get("height")
        if not (_is_int(width) and _is_int(height)):
            width, height = _size_or_zero(image_path)
        by_id[img_id] = Sample(
            image_path, int(width), int(height), split=split, origin=f"{name} image id {img_id}"
        )
    _annotations(doc.get("annotations", []), name, by_id, cat_names, problems)
    return list(by_id.values())


def _categories(cats: Any, name: str, problems: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    if not isinstance(cats, list):
        problems.append(f"{name}: expected a 'categories' list of {{'id', 'name'}}")
        return out
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not cat.get("name"):
            problems.append(f"{name} categories[{i}]: expected integer 'id' and a 'name'")
        elif int(cat["id"]) in out:
            problems.append(f"{name}: duplicate category id {cat['id']}: expected unique ids")
        elif str(cat["name"]) in out.values():
            problems.append(f"{name}: duplicate category name {cat['name']!r}: expected unique")
        else:
            out[int(cat["id"])] = str(cat["name"])
    return dict(sorted(out.items()))


def _annotations(
    anns: Any, name: str, by_id: dict[int, Sample], cats: dict[int, str], problems: list[str]
) -> None:
    if not isinstance(anns, list):
        problems.append(f"{name}: expected 'annotations' to be a list")
        return
    seen: set[int] = set()
    for i, ann in enumerate(anns):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        where = f"{name} annotation id {ann_id}" if _is_int(ann_id) else f"{name} annotations[{i}]"
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not _is_int(ann_id) or not _is_int(ann.get("image_id")) or not _is_bbox(bbox):
            problems.append(f"{where}: expected integer 'id', 'image_id' and bbox [x, y, w, h]")
            continue
        if ann_id in seen:
            problems.append(f"{name}: duplicate annotation id {ann_id}: expected unique ids")
            continue
        seen.add(int(ann_id))
        sample = by_id.get(int(ann["image_id"]))
        if sample is None:
            problems.append(f"{where}: image_id {ann['image_id']} is not in 'images'")
            continue
        cat_id = ann.get("category_id")
        if cat_id not in cats:
            problems.append(
                f"{where}: unknown class: category_id {cat_id!r} is not one of "
                f"{[f'{k}: {v}' for k, v in cats.items()]}"
            )
            continue
        x, y, w, h = (float(v) for v in bbox)
        difficult = bool(ann.get("iscrowd", 0)) or bool(ann.get("difficult", 0))
        sample.boxes.append(Box((x, y, x + w, y + h), cats[cat_id], difficult, where))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bbox(value: Any) -> TypeGuard[list[float]]:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def _size_or_zero(path: Path) -> tuple[int, int]:
    try:
        return read_size(path)
    except (OSError, ValueError):
        return 0, 0  # validate() reports the missing or unreadable image


def save(dataset: Dataset, out: Path, images: ImageMode = "copy") -> None:
    """Write ``dataset`` as COCO JSON, one file per split, and place its images."""
    if dataset.task != "detect":
        raise DatasetError(f"coco holds detection boxes; this dataset's task is {dataset.task}")
    prepare_output(out)
    (out / "annotations").mkdir()
    categories = [
        {"id": i + 1, "name": name, "supercategory": "none"}
        for i, name in enumerate(dataset.classes)
    ]
    cat_ids = {c["name"]: c["id"] for c in categories}
    for split, members in dataset.by_split().items():
        image_dir = out / "images" / split if split else out / "images"
        names = UniqueNames()
        doc: dict[str, Any] = {
            "info": {"description": "written by edge-trainer", "version": "1.0"},
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": categories,
        }
        for image_id, sample in enumerate(members, start=1):
            file_name = names.claim(sample.image_path.name)
            place_image(sample.image_path, image_dir / file_name, images)
            doc["images"].append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": sample.width,
                    "height": sample.height,
                }
            )
            for box in sample.boxes:
                x1, y1, x2, y2 = box.xyxy
                w, h = x2 - x1, y2 - y1
                ann = {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[box.label],
                    "bbox": [round(v, BBOX_DECIMALS) for v in (x1, y1, w, h)],
                    "area": round(w * h, BBOX_DECIMALS),
                    "iscrowd": 0,
                }
                if box.difficult:
                    ann["difficult"] = 1  # not COCO; read back by our loader, ignored by others
                doc["annotations"].append(ann)
        target = out / "annotations" / (f"instances_{split}.json" if split else "instances.json")
        target.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
