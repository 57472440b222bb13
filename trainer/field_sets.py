"""Reading the field folders the agent's ``collect`` stage writes, and finding near-duplicates
among their frames, for ``edge-trainer import-field`` (import_field.py).

A field folder is ``field/annotations/instances_default.json`` plus ``field/images/``
(edge_agent/analytics/collect_writer.py). Near-duplicates are found with a difference hash
(dHash: the signs of horizontal gradients of a grey thumbnail; Krawetz, "Kind of like that",
2013) of 16x16 bits, not the usual 8x8: at 8x8 an object of 4 % of a 640x480 frame moving
across it changed 2-9 of 64 bits, as little as sensor noise can; at 16x16 it changes 15-22 of
256, Gaussian noise of sd 3 changes 4, a brightness change and JPEG re-encoding none
(measured on the scenes of tests/test_field_loop.py and tests/test_import_field.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import cv2
import numpy as np

from trainer.datasets.core import DatasetError

FIELD_JSON = Path("annotations") / "instances_default.json"
HASH_SIZE = 16  # 16x16 gradient signs
HASH_BITS = HASH_SIZE * HASH_SIZE
#: Set bits of every byte value: Hamming distances of packed hashes by table look-up.
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


@dataclass
class FieldImage:
    """One kept frame: its record and pre-labels with label names, not ids."""

    path: Path
    record: dict[str, Any]
    boxes: list[tuple[str, list[float], float | None]] = field(default_factory=list)
    folder: Path = Path()

    @property
    def ts(self) -> float:
        value = self.record.get("ts")
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def image_labels(self) -> list[str] | None:
        """A classifier's decided labels, or None for a detector's frame."""
        cls = self.record.get("classification")
        return list(cls.get("labels", [])) if isinstance(cls, dict) else None


@dataclass
class FieldSet:
    folder: Path
    labels: list[str]
    images: list[FieldImage]

    @property
    def task(self) -> str:
        return "classify" if any(i.image_labels is not None for i in self.images) else "detect"


def find_field_sets(path: Path) -> list[Path]:
    """The field folders at ``path``: itself, or every one below it (a copied state_dir)."""
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder: expected a field folder of a device")
    if (path / FIELD_JSON).is_file():
        return [path]
    found = sorted(p.parent.parent for p in path.rglob(str(FIELD_JSON)))
    if not found:
        raise DatasetError(
            f"{path}: no field data: expected {FIELD_JSON} (the collect stage's field/ folder, "
            "<state_dir>/sources/<source>/field) in it or in a folder below it"
        )
    return found


def read_field_set(folder: Path, label_map: dict[str, str]) -> FieldSet:
    """One device's folder; ``label_map`` renames labels. DatasetError lists every problem."""
    json_path = folder / FIELD_JSON
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{json_path}: not readable as JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{json_path}: expected a COCO object with images, annotations and categories lists"
        )
    problems: list[str] = []
    cats: dict[int, str] = {}
    for cat in doc["categories"]:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not cat.get("name"):
            problems.append(f"{json_path}: category {cat!r}: expected integer 'id' and a 'name'")
            continue
        name = str(cat["name"])
        cats[cat["id"]] = label_map.get(name, name)
    images: dict[int, FieldImage] = {}
    for record in doc["images"]:
        file_name = record.get("file_name") if isinstance(record, dict) else None
        if not isinstance(file_name, str) or not isinstance(record.get("id"), int):
            problems.append(f"{json_path}: image {record!r}: expected integer 'id', 'file_name'")
            continue
        path = folder / "images" / file_name
        if not path.is_file():
            problems.append(f"{json_path} image id {record['id']}: {path} is missing")
            continue
        cls = record.get("classification")
        if isinstance(cls, dict):
            cls["labels"] = [label_map.get(n, n) for n in cls.get("labels", [])]
            cls["scores"] = {label_map.get(n, n): v for n, v in cls.get("scores", {}).items()}
        images[record["id"]] = FieldImage(path, record, folder=folder)
    for ann in doc["annotations"]:
        image = images.get(ann.get("image_id", -1)) if isinstance(ann, dict) else None
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if image is None or ann.get("category_id") not in cats or not _is_bbox(bbox):
            problems.append(
                f"{json_path} annotation {ann!r}: expected a known image_id, category_id and "
                "bbox [x, y, w, h]"
            )
            continue
        score = ann.get("score")
        xywh = [float(v) for v in bbox]
        image.boxes.append((cats[ann["category_id"]], xywh, score))
    if problems:
        raise DatasetError(problems, f"{json_path}: invalid field data")
    labels = list(dict.fromkeys(cats.values()))
    return FieldSet(folder, labels, sorted(images.values(), key=lambda i: i.ts))


def _is_bbox(value: Any) -> TypeGuard[list[float]]:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def dhash(path: Path) -> np.ndarray:
    """The difference hash of an image file: HASH_BITS bits packed in bytes (uint8)."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise DatasetError(f"{path}: not a readable image")
    small = cv2.resize(grey, (HASH_SIZE + 1, HASH_SIZE), interpolation=cv2.INTER_AREA)
    return np.packbits(small[:, 1:] > small[:, :-1])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between packed hashes (broadcast: one against many)."""
    return POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int64)


class NearDuplicates:
    """Hashes of the frames kept so far; a new frame within ``max_distance`` bits of one of
    them is a near-duplicate."""

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self._hashes = np.zeros((0, HASH_BITS // 8), np.uint8)

    def seen(self, value: np.ndarray) -> bool:
        """True if ``value`` is near one kept; otherwise it is kept and False returned."""
        if len(self._hashes) and int(hamming(self._hashes, value).min()) <= self.max_distance:
            return True
        self._hashes = np.vstack([self._hashes, value[np.newaxis]])
        return False
