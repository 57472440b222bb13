"""``edge-trainer import-field OUT DIR [DIR ...]``: the field folders of several devices (the
agent's ``collect`` stage) merged into one training set, ready for a labelling tool and then
``edge-trainer train --data``.

Detector frames become COCO in the trainer's layout (``annotations/instances_<split>.json``,
``images/<split>/``; CVAT's COCO 1.0 and Label Studio's COCO import read it), the model's boxes
kept as pre-labels with their ``score``. Classifier frames become class folders (one label per
image: the model's decided label, else its top one) or, from a multilabel model, the multilabel
CSV. Near-identical frames are dropped (field_sets.dhash), the oldest kept. Labels are merged
by name; folders whose models had different labels are refused unless ``--map`` renames them
or ``--union-labels`` accepts the union (docs/field-data.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_OK, int_in
from trainer.cli_support import split_fraction
from trainer.datasets import IMAGE_MODES, Box, Dataset, DatasetError, Sample, load, save, split
from trainer.datasets.files import UniqueNames, place_image, prepare_output
from trainer.field_sets import (
    HASH_BITS,
    FieldImage,
    FieldSet,
    NearDuplicates,
    dhash,
    find_field_sets,
)
from trainer.field_sets import read_field_set as read_set

#: Hamming distance (bits of 256) up to which two frames are the same scene: JPEG re-encoding
#: and a brightness change move none, sensor noise a few (4 at sd 3), an object of 4 % of the
#: frame moving 15 or more (field_sets).
DEFAULT_MAX_DISTANCE = 8
#: Boxes smaller than this (pixels) once clipped to the image are dropped: no annotator or
#: loss can use them.
MIN_BOX_PX = 1.0
NO_SPLIT = "default"  # CVAT's subset name for "no split"; the trainer reads it as none


@dataclass
class Imported:
    images: int
    duplicates: int
    boxes_dropped: int
    per_folder: dict[str, tuple[int, int]]  # folder -> (read, duplicates dropped)
    classes: list[str]
    fmt: str


def merge_labels(sets: list[FieldSet], union: bool) -> list[str]:
    """Every set's labels in first-seen order; DatasetError when they differ, unless ``union``."""
    merged = list(dict.fromkeys(name for s in sets for name in s.labels))
    differ = [s for s in sets if set(s.labels) != set(merged)]
    if differ and not union:
        listed = "; ".join(f"{s.folder} has {s.labels}" for s in sets)
        raise DatasetError(
            f"the field folders come from models with different labels: {listed}. Rename "
            "labels with --map OLD=NEW, or pass --union-labels to train on every label (frames "
            "of a model without a label carry no pre-label for it)"
        )
    return merged


def import_field(
    out: Path,
    folders: list[Path],
    val_fraction: float = 0.2,
    seed: int = 0,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    label_map: dict[str, str] | None = None,
    union_labels: bool = False,
    images: str = "copy",
) -> Imported:
    """Merge ``folders`` into the new folder ``out``; what was done, for the report."""
    found = [f for folder in folders for f in find_field_sets(folder)]
    for folder in folders:
        if out.resolve().is_relative_to(folder.resolve()):
            raise DatasetError(f"{out}: the output folder must not be inside the input {folder}")
    sets = [read_set(f, label_map or {}) for f in found]
    tasks = {s.task for s in sets}
    if len(tasks) > 1:
        kinds = "; ".join(f"{s.folder}: {s.task}" for s in sets)
        raise DatasetError(f"the field folders mix detector and classifier frames ({kinds})")
    classes = merge_labels(sets, union_labels)
    dedup = NearDuplicates(max_distance)
    per_folder: dict[str, list[int]] = {str(s.folder): [len(s.images), 0] for s in sets}
    kept: list[FieldImage] = []
    for image in sorted((i for s in sets for i in s.images), key=lambda i: i.ts):
        if dedup.seen(dhash(image.path)):
            per_folder[str(image.folder)][1] += 1
        else:
            kept.append(image)
    if not kept:
        raise DatasetError(f"{', '.join(map(str, folders))}: the field folders hold no images")
    dataset, dropped, scores = _dataset(kept, classes, tasks.pop())
    if val_fraction > 0:
        dataset = split(dataset, val_fraction, seed)
    by_path = {str(i.path): i for i in kept}
    if dataset.task == "detect":
        fmt = "coco"
        _write_coco(out, dataset, by_path, scores, images)
    else:
        fmt = "multilabel" if dataset.multilabel else "folders"
        save(dataset, out, fmt, images=images)  # type: ignore[arg-type]
    load(out, fmt)  # what was written is what train and inspect will read, checked as they do
    return Imported(
        len(kept),
        sum(d for _, d in per_folder.values()),
        dropped,
        {k: (v[0], v[1]) for k, v in per_folder.items()},
        dataset.classes,
        fmt,
    )


def _dataset(
    kept: list[FieldImage], classes: list[str], task: str
) -> tuple[Dataset, int, dict[str, list[float | None]]]:
    """The trainer's dataset of the kept frames (boxes clipped to the image), how many boxes
    were too small to keep, and the model's score of each box kept, by image path."""
    samples, dropped = [], 0
    scores: dict[str, list[float | None]] = {}
    multilabel = False
    for image in kept:
        w, h = int(image.record.get("width", 0)), int(image.record.get("height", 0))
        sample = Sample(image.path, w, h, origin=str(image.path))
        if task == "classify":
            cls = image.record["classification"]
            multilabel |= bool(cls.get("multilabel"))
            guesses: dict[str, float] = cls.get("scores") or {}
            top = max(guesses, key=lambda k: guesses[k]) if guesses else None
            sample.labels = cls["labels"] if cls.get("multilabel") else cls["labels"][:1]
            if not sample.labels and not cls.get("multilabel") and top is not None:
                sample.labels = [top]  # unsure below its threshold: the best guess to correct
        else:
            kept_scores = scores.setdefault(str(image.path), [])
            for label, (x, y, bw, bh), score in image.boxes:
                x1, y1 = max(0.0, x), max(0.0, y)
                x2, y2 = min(float(w), x + bw), min(float(h), y + bh)
                if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
                    dropped += 1
                    continue
                sample.boxes.append(Box((x1, y1, x2, y2), label, origin=str(image.path)))
                kept_scores.append(score if isinstance(score, int | float) else None)
        samples.append(sample)
    dataset = Dataset(task, classes, samples, multilabel=multilabel)  # type: ignore[arg-type]
    return dataset, dropped, scores


def _write_coco(
    out: Path,
    dataset: Dataset,
    by_path: dict[str, FieldImage],
    scores: dict[str, list[float | None]],
    mode: str,
) -> None:
    """COCO per split with the field records (device, source, model, reasons) and the boxes'
    ``score`` kept: a labelling tool shows them as pre-labels, our loader ignores them."""
    prepare_output(out)
    (out / "annotations").mkdir()
    categories = [{"id": i + 1, "name": n, "supercategory": "none"}
                  for i, n in enumerate(dataset.classes)]  # fmt: skip
    cat_ids = {c["name"]: c["id"] for c in categories}
    for split_name, members in dataset.by_split().items():
        subset = split_name or NO_SPLIT
        names = UniqueNames()
        doc: dict[str, Any] = {
            "info": {"description": "field data merged by edge-trainer import-field",
                     "version": "1.0"},
            "licenses": [], "images": [], "annotations": [], "categories": categories,
        }  # fmt: skip
        for image_id, sample in enumerate(members, start=1):
            field_image = by_path[str(sample.image_path)]
            file_name = names.claim(sample.image_path.name)
            place_image(sample.image_path, out / "images" / subset / file_name, mode)  # type: ignore[arg-type]
            record = {k: v for k, v in field_image.record.items() if k not in ("id", "file_name")}
            doc["images"].append({"id": image_id, "file_name": file_name, **record,
                                  "field_file": str(sample.image_path)})  # fmt: skip
            box_scores = scores.get(str(sample.image_path), [])
            for box, score in zip(sample.boxes, box_scores, strict=True):
                x1, y1, x2, y2 = box.xyxy
                ann = {"id": len(doc["annotations"]) + 1, "image_id": image_id,
                       "category_id": cat_ids[box.label],
                       "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                       "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0}  # fmt: skip
                if score is not None:
                    ann["score"] = score
                doc["annotations"].append(ann)
        path = out / "annotations" / f"instances_{subset}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _label_pair(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old.strip() or not new.strip():
        raise argparse.ArgumentTypeError(
            f"expected OLD=NEW (a label and its new name), got {text!r}"
        )
    return old.strip(), new.strip()


def add_import_field_command(subparsers: Any) -> None:
    """Register ``import-field`` on an ``add_subparsers()`` object."""
    imp = subparsers.add_parser(
        "import-field", help="merge the collect stage's field folders into one training set",
        description="Merge field folders (the agent's collect stage, one or more devices) into "
        "a training set: near-duplicates dropped, labels merged by name, pre-labels kept.",
    )  # fmt: skip
    imp.add_argument("output", metavar="OUT", type=Path, help="a new or empty folder")
    imp.add_argument(
        "folders", metavar="DIR", type=Path, nargs="+",
        help="a field folder, or a folder holding some (a copy of a device's state_dir)",
    )  # fmt: skip
    imp.add_argument(
        "--val-fraction", type=split_fraction, default=0.2, help="val share, 0 = no split (0.2)"
    )
    imp.add_argument("--seed", type=int, default=0, help="seed of the val split (0)")
    imp.add_argument(
        "--max-distance", type=int_in(0, HASH_BITS), default=DEFAULT_MAX_DISTANCE, metavar="BITS",
        help=f"frames whose {HASH_BITS}-bit dHash differ in at most BITS are near-duplicates; the "
        f"oldest is kept ({DEFAULT_MAX_DISTANCE}; 0: identical hashes only)",
    )  # fmt: skip
    imp.add_argument(
        "--map", type=_label_pair, action="append", default=[], metavar="OLD=NEW",
        help="rename a label of the field data (repeatable); two labels may become one",
    )  # fmt: skip
    imp.add_argument(
        "--union-labels", action="store_true",
        help="accept folders whose models had different labels: train on all of them",
    )  # fmt: skip
    imp.add_argument(
        "--images", choices=IMAGE_MODES, default="copy", help="how images reach OUT (copy)"
    )
    imp.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    done = import_field(
        args.output, args.folders, val_fraction=args.val_fraction, seed=args.seed,
        max_distance=args.max_distance, label_map=dict(args.map),
        union_labels=args.union_labels, images=args.images,
    )  # fmt: skip
    for folder, (read, dupes) in done.per_folder.items():
        print(f"{folder}: {read} images, {dupes} near-duplicates dropped")
    print(
        f"imported {done.images} images ({done.duplicates} near-duplicates dropped at "
        f"--max-distance {args.max_distance}, {done.boxes_dropped} boxes under {MIN_BOX_PX:g} px "
        f"dropped), {len(done.classes)} classes {done.classes} as {done.fmt}: {args.output}"
    )
    print(f"next: label it (docs/field-data.md), then edge-trainer train --data {args.output}")
    return EXIT_OK
