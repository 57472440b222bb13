"""Synthetic scenes: deterministic by seed, exact boxes inside the image, every class shows up."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.datasets import load
from trainer.synth import KINDS, generate, render
from trainer.synth.canvas import Canvas, Sprite

SIZE = (160, 160)


def test_same_seed_gives_identical_annotations_and_pixels(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate("shelf", 6, tmp_path / name, "coco", seed=5, size=SIZE)
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    images_a = sorted((tmp_path / "a" / "images").rglob("*.jpg"))
    assert len(images_a) == 6
    for path in images_a:
        other = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert np.array_equal(cv2.imread(str(path)), cv2.imread(str(other)))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_render_depends_on_seed_and_index_only(kind: str) -> None:
    a, boxes_a, _ = render(kind, 3, seed=1, size=SIZE)
    b, boxes_b, _ = render(kind, 3, seed=1, size=SIZE)
    c, _, _ = render(kind, 3, seed=2, size=SIZE)
    assert np.array_equal(a, b) and boxes_a == boxes_b
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_boxes_inside_image_and_every_class_appears(kind: str) -> None:
    seen: set[str] = set()
    width, height = 200, 120
    for i in range(30):
        image, boxes, visible = render(kind, i, seed=0, size=(width, height))
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        for box, vis in zip(boxes, visible, strict=True):
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert vis >= 0.3
            seen.add(box.label)
    assert seen == set(KINDS[kind][0])


def test_trail_has_night_infrared_images() -> None:
    grey = 0
    for i in range(20):
        image, _, _ = render("trail", i, seed=0, size=SIZE)
        grey += bool(np.array_equal(image[..., 0], image[..., 1]))
    assert 3 <= grey <= 17  # about 40 % night, some days


def test_canvas_box_is_the_visible_drawn_pixels() -> None:
    canvas = Canvas(np.zeros((50, 80, 3), np.uint8))
    sprite = Sprite(20, 10)
    sprite.rect(0, 0, 1, 1, (255, 255, 255))
    canvas.paste(sprite, 70, 5, "cropped")  # 10 of 20 columns inside: 50 % visible
    canvas.paste(sprite, 10, 30, "hidden")
    occluder = Sprite(16, 10)
    occluder.rect(0, 0, 1, 1, (0, 0, 255))
    canvas.paste(occluder, 10, 30, None)  # leaves 4 of 20 columns: 20 % visible, dropped
    canvas.paste(sprite, 40, 20, "whole")
    boxes = {label: (xyxy, vis) for label, xyxy, vis in canvas.boxes(0.3)}
    assert boxes == {
        "cropped": ((70.0, 5.0, 80.0, 15.0), 0.5),
        "whole": ((40.0, 20.0, 60.0, 30.0), 1.0),
    }


def test_folders_format_writes_crops_per_class(tmp_path: Path) -> None:
    result = generate("trail", 12, tmp_path / "crops", "folders", seed=0, size=SIZE)
    data = load(tmp_path / "crops")
    assert data.task == "classify" and data.classes == sorted(KINDS["trail"][0])
    assert len(data.samples) == sum(result.per_class.values()) > 0
    assert {s.split for s in data.samples} <= {"train", "val"}
    for sample in data.samples:
        assert sample.image_path.parent.name == sample.labels[0]
        assert min(sample.width, sample.height) >= 16


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_generated_formats_load_back(tmp_path: Path, fmt: str) -> None:
    result = generate("trail", 8, tmp_path / fmt, fmt, seed=4, size=SIZE, val_fraction=0)
    data = load(tmp_path / fmt)
    assert sum(len(s.boxes) for s in data.samples) == sum(result.per_class.values())


def test_bad_size_and_kind_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate("shelf", 2, tmp_path / "x", "coco", size=(20, 20))
    with pytest.raises(ValueError, match="unknown synth kind"):
        generate("zoo", 2, tmp_path / "y", "coco")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_worker_processes_give_the_same_dataset(tmp_path: Path) -> None:
    generate("trail", 4, tmp_path / "one", "yolo", seed=9, size=SIZE, workers=1)
    generate("trail", 4, tmp_path / "two", "yolo", seed=9, size=SIZE, workers=2)
    for label in sorted((tmp_path / "one" / "labels").rglob("*.txt")):
        twin = tmp_path / "two" / label.relative_to(tmp_path / "one")
        assert label.read_bytes() == twin.read_bytes()
