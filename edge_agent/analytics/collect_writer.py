"""The ``collect`` stage's folder: a COCO dataset that survives power cuts and stays under its
byte cap.

Layout (``<state_dir>/sources/<src>/field/``)::

    images/<device>_<source>_<UTC time>_<seq>.jpg
    annotations/instances_default.json     # CVAT's name for "no split"; edge-trainer reads it

Each kept frame is written as a JPEG (temp file, fsync, rename), then the whole JSON the same
way, so a crash leaves the previous JSON, never half of one; a JPEG the JSON does not name (the
crash came between the two) is removed at the next start, which continues the set (ids go on
from the highest). When a new frame would take the folder past ``max_bytes``, the oldest
frames leave the JSON first and their files are removed after it is written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.fsutil import move_aside, write_atomic

log = logging.getLogger(__name__)

ANNOTATIONS = Path("annotations") / "instances_default.json"
IMAGES = Path("images")
SCHEMA = "edgesight.field/1"


class FieldSetFull(ValueError):
    """One frame is larger than the whole folder may be."""


@dataclass(frozen=True)
class Added:
    file_name: str
    evicted: int  # older frames removed to make room


class FieldSet:
    """The COCO document of one source's kept frames and the files it names."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.doc: dict[str, Any] = {}
        self.image_bytes: dict[int, int] = {}  # image id -> file size
        self.json_bytes = 0
        self.orphans_removed = 0
        self._next_image = 1
        self._next_ann = 1

    @property
    def path(self) -> Path:
        return self.folder / ANNOTATIONS

    @property
    def total_bytes(self) -> int:
        return sum(self.image_bytes.values()) + self.json_bytes

    def open(self, info: dict[str, Any]) -> None:
        """Read the set a previous run left (or start one); drop records whose image is gone
        and images no record names."""
        (self.folder / IMAGES).mkdir(parents=True, exist_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = self._read()
        doc["info"] = {**doc.get("info", {}), **info}
        images_dir = self.folder / IMAGES
        kept = []
        for record in doc["images"]:
            if not _is_record(record):
                continue  # edited by hand: a record we cannot use is dropped with its boxes
            image = images_dir / record["file_name"]
            if image.is_file():
                kept.append(record)
                self.image_bytes[record["id"]] = image.stat().st_size
        ids = {r["id"] for r in kept}
        doc["images"] = kept
        doc["annotations"] = [
            a for a in doc["annotations"] if isinstance(a, dict) and a.get("image_id") in ids
        ]
        named = {r["file_name"] for r in kept}
        for file in images_dir.iterdir():
            if file.name not in named:
                file.unlink(missing_ok=True)  # written just before a crash, or a temp file
                self.orphans_removed += 1
        self.doc = doc
        self._next_image = max(ids, default=0) + 1
        ann_ids = [a.get("id") for a in doc["annotations"]]
        self._next_ann = max((i for i in ann_ids if isinstance(i, int)), default=0) + 1
        self.json_bytes = self.path.stat().st_size if self.path.is_file() else 0

    def _read(self) -> dict[str, Any]:
        empty: dict[str, Any] = {
            "info": {},
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": [],
        }
        if not self.path.is_file():
            return empty
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not all(
                isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
            ):
                raise ValueError("expected an object with images, annotations and categories")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            # Never written by us (every write is atomic): someone edited it. Kept aside for
            # them; the set starts again, and the orphan sweep removes the images.
            aside = move_aside(self.path)
            log.warning(
                "%s unreadable (%s): moved to %s, starting a new set", self.path, exc, aside.name
            )
            return empty
        return doc

    def category_id(self, name: str) -> int:
        """The id of a label, added when a swapped model brings a new one (ids 1..K)."""
        cats = self.doc["categories"]
        for cat in cats:
            if cat["name"] == name:
                return int(cat["id"])
        new = max((int(c["id"]) for c in cats), default=0) + 1
        cats.append({"id": new, "name": name, "supercategory": "none"})
        return new

    def recent_times(self, since: float) -> list[float]:
        """Capture times of frames kept since ``since`` (the rate cap after a restart)."""
        times = (r.get("ts") for r in self.doc["images"])
        return [float(t) for t in times if isinstance(t, int | float) and t >= since]

    def add(self, jpeg: bytes, record: dict[str, Any], annotations: list[dict[str, Any]]) -> Added:
        """Write one frame and its record (``file_name`` unique in the folder is set here)."""
        if len(jpeg) > self.max_bytes:
            raise FieldSetFull(f"a {len(jpeg)}-byte frame is larger than max_bytes")
        images_dir = self.folder / IMAGES
        name = record["file_name"]
        stem, n = Path(name).stem, 0
        while (images_dir / name).exists():
            n += 1
            name = f"{stem}_{n}.jpg"
        image_id = self._next_image
        record = {**record, "id": image_id, "file_name": name}
        anns = []
        for ann in annotations:
            anns.append({**ann, "id": self._next_ann, "image_id": image_id})
            self._next_ann += 1
        write_atomic(images_dir / name, jpeg)
        self._next_image += 1
        self.doc["images"].append(record)
        self.doc["annotations"].extend(anns)
        self.image_bytes[image_id] = len(jpeg)
        evicted = self._fit_and_write()
        for file_name in evicted:
            (images_dir / file_name).unlink(missing_ok=True)
        return Added(name, len(evicted))

    def _fit_and_write(self) -> list[str]:
        """Drop the oldest records until images and JSON fit, write the JSON; the file names
        dropped (removed by the caller once the JSON no longer names them)."""
        evicted: list[str] = []
        while True:
            data = (json.dumps(self.doc, separators=(",", ":")) + "\n").encode()
            fits = sum(self.image_bytes.values()) + len(data) <= self.max_bytes
            if fits or len(self.doc["images"]) <= 1:
                break
            oldest = self.doc["images"].pop(0)
            self.image_bytes.pop(oldest["id"], None)
            self.doc["annotations"] = [
                a for a in self.doc["annotations"] if a["image_id"] != oldest["id"]
            ]
            evicted.append(oldest["file_name"])
        write_atomic(self.path, data)
        self.json_bytes = len(data)
        return evicted


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("id"), int)
        and isinstance(record.get("file_name"), str)
        and "/" not in record["file_name"]
    )
