"""Procedural datasets with exact boxes: ``shelf`` (retail products) and ``trail`` (wildlife).

For tests, demos and smoke-training without a download. Image ``i`` depends only on
(kind, seed, i, size), never on ``n`` or the process that drew it, so runs are reproducible
byte for byte and rendering can be spread over processes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trainer.datasets.core import Box, Dataset, DatasetError, Sample, split
from trainer.datasets.files import prepare_output
from trainer.datasets.multilabel import from_boxes
from trainer.datasets.registry import save
from trainer.errors import InputError
from trainer.synth import shelf, trail

#: kind -> (classes, render(rng, width, height, min_visible)); the salt keeps kinds independent.
KINDS: dict[str, tuple[list[str], Callable, int]] = {
    "shelf": (shelf.CLASSES, shelf.render, 1),
    "trail": (trail.CLASSES, trail.render, 2),
}
SYNTH_FORMATS = ("coco", "voc", "yolo", "folders", "multilabel")
DEFAULT_SIZE = (320, 320)
#: Objects with less of their pixels visible than this are dropped, not labelled (the default;
#: ``--min-visible`` changes it). multilabel.MIN_VISIBLE is the same share, for converted boxes.
MIN_VISIBLE = 0.3
#: Classification crops need most of the object in view and a usable size (pixels).
CROP_MIN_VISIBLE = 0.6
CROP_MIN_SIDE_PX = 16
JPEG_QUALITY = 92
MIN_SIDE_PX = 64  # below this the scenes stop making sense


@dataclass
class SynthResult:
    """What ``generate`` wrote: scene count, and per class its boxes, crops or labelled images."""

    images: int
    per_class: Counter[str]
    out: Path


def render(
    kind: str,
    index: int,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, list[Box], list[float]]:
    """Scene ``index`` of ``kind``: a BGR uint8 image, its exact boxes, their visible fractions.

    Objects with less than ``min_visible`` of their pixels visible are left out; the pixels do
    not depend on it (the owner map is read after drawing).
    """
    if not 0.0 <= min_visible <= 1.0:  # also refuses nan
        raise InputError(f"min_visible must be a fraction in [0, 1], but got {min_visible}")
    if kind not in KINDS:
        raise InputError(f"unknown synth kind {kind!r}: expected one of {sorted(KINDS)}")
    width, height = size
    if min(width, height) < MIN_SIDE_PX:
        raise InputError(f"size must be at least {MIN_SIDE_PX}x{MIN_SIDE_PX}, got {width}x{height}")
    _, draw, salt = KINDS[kind]
    rng = np.random.default_rng([seed, index, salt])
    image, raw = draw(rng, width, height, min_visible)
    return image, [Box(xyxy, label) for label, xyxy, _visible in raw], [v for *_, v in raw]


CropFile = tuple[Path, str, int, int]  # path, label, width, height


def _render_to_files(
    job: tuple[str, int, int, tuple[int, int], float, Path, bool],
) -> tuple[Path, list[Box], list[CropFile]]:
    """Render one scene into ``folder``; also its crops when ``crops``. Runs in a worker."""
    kind, index, seed, size, min_visible, folder, crops = job
    image, boxes, visible = render(kind, index, seed, size, min_visible)
    path = folder / f"{kind}_{index:06d}.jpg"
    _write_jpeg(path, image)
    crop_files: list[CropFile] = []
    if crops:
        for k, (box, vis) in enumerate(zip(boxes, visible, strict=True)):
            x1, y1, x2, y2 = (round(v) for v in box.xyxy)
            if vis < CROP_MIN_VISIBLE or min(x2 - x1, y2 - y1) < CROP_MIN_SIDE_PX:
                continue
            crop_path = folder / "crops" / f"{kind}_{index:06d}_{k:02d}.jpg"
            _write_jpeg(crop_path, image[y1:y2, x1:x2])
            crop_files.append((crop_path, box.label, x2 - x1, y2 - y1))
    return path, boxes, crop_files


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def generate(
    kind: str,
    n: int,
    out: Path | str,
    fmt: str,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    val_fraction: float = 0.2,
    workers: int = 1,
    min_visible: float = MIN_VISIBLE,
) -> SynthResult:
    """Render ``n`` scenes and write them to the new folder ``out`` in ``fmt``.

    ``folders`` writes classification crops of the objects (one folder per class);
    ``multilabel`` writes the scenes with image labels, the classes of the objects at least
    ``min_visible`` visible (by their pixels, not their boxes); every other format writes the
    scenes with their boxes. Scenes are split train/val by ``split()`` (``val_fraction`` 0 leaves
    them unsplit); crops follow their scene, so no scene leaks.
    """
    out = Path(out)
    if fmt not in SYNTH_FORMATS:
        raise DatasetError(f"unknown synth format {fmt!r}: expected one of {list(SYNTH_FORMATS)}")
    if n < 1:
        raise DatasetError(f"--n must be at least 1, got {n}")
    render(
        kind, 0, seed, size, min_visible
    )  # fail fast on a bad kind or size, before any file is written
    prepare_output(out).rmdir()  # refuse a non-empty folder now, not after rendering
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = KINDS[kind][0]
    with tempfile.TemporaryDirectory(prefix=".synth-", dir=out.parent) as tmp:
        jobs = [(kind, i, seed, size, min_visible, Path(tmp), fmt == "folders") for i in range(n)]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_render_to_files, jobs, chunksize=8))
        else:
            results = [_render_to_files(job) for job in jobs]
        w, h = size
        scenes = Dataset(
            "detect", list(classes), [Sample(path, w, h, boxes=boxes) for path, boxes, _ in results]
        )
        if val_fraction > 0:
            scenes = split(scenes, val_fraction, seed)
        if fmt == "multilabel":
            # every box is inside the image and already passed min_visible by its pixels
            labelled, _ = from_boxes(scenes, min_visible=0.0)
            save(labelled, out, fmt, images="hardlink")
            counts = Counter(label for s in labelled.samples for label in s.labels)
            return SynthResult(n, counts, out)
        if fmt != "folders":
            save(scenes, out, fmt, images="hardlink")
            counts = Counter(b.label for s in scenes.samples for b in s.boxes)
            return SynthResult(n, counts, out)
        scene_split = {s.image_path: s.split for s in scenes.samples}
        crops = [
            Sample(path, cw, ch, labels=[label], split=scene_split[scene])
            for scene, _, crop_files in results
            for path, label, cw, ch in crop_files
        ]
        if not crops:
            raise DatasetError(f"no object in {n} scenes was big and visible enough to crop")
        splits = {s.split: "" for s in crops}
        save(Dataset("classify", list(classes), crops, splits=splits), out, fmt, images="hardlink")
        return SynthResult(n, Counter(s.labels[0] for s in crops), out)
