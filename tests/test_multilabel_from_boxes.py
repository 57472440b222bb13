"""Boxes become multilabel image labels: convert --to multilabel and synth --format multilabel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.cli import main
from trainer.datasets import Box, DatasetError, from_boxes, load, save
from trainer.datasets.multilabel import inside_fraction
from trainer.synth import generate, render

SIZE = (160, 160)
W, H = 64, 48
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
#: image file -> boxes (category id, COCO [x, y, w, h]) in a 64x48 image
BOXES: dict[str, list[tuple[int, list[float]]]] = {
    # two cats (one label), a dog 10 of 40 px wide inside the frame: 25 % visible
    "a.jpg": [(1, [1, 2, 10, 10]), (1, [20, 20, 10, 10]), (2, [54, 10, 40, 10])],
    # only a dog 25 % inside (left edge): no label left, the image stays as a negative
    "b.jpg": [(2, [-30, 5, 40, 10])],
    # a dog wholly inside but tiny: 16 px of 3072, about 0.5 % of the image
    "c.jpg": [(2, [0, 0, 4, 4])],
    # no boxes at all: a negative before and after
    "d.jpg": [],
}
#: Labels with the defaults (--min-visible 0.3, --min-area 0).
EXPECTED = {
    "a.jpg": ["cat"],  # two cats are one label; the 25 %-visible dog is below 0.3
    "b.jpg": [],  # every box dropped: kept, as a negative
    "c.jpg": ["dog"],  # small but wholly inside: --min-area is off by default
    "d.jpg": [],
}


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((H, W, 3), 127, np.uint8))


def tiny_coco(root: Path) -> Path:
    """A COCO set with the known boxes above; boxes may leave the frame (amodal annotations)."""
    images, annotations = [], []
    for i, (name, boxes) in enumerate(BOXES.items(), 1):
        write_image(root / "images" / "train" / name)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
        for cat, bbox in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "category_id": cat, "bbox": bbox}
            )
    doc = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    return root


def labels_by_name(path: Path) -> dict[str, list[str]]:
    data = load(path, "multilabel")
    return {s.image_path.name: s.labels for s in data.samples}


def convert(src: Path, out: Path, *flags: str, fmt: str = "coco") -> int:
    return main(["convert", "--from", fmt, "--to", "multilabel", *flags, str(src), str(out)])


def test_inside_fraction_is_the_share_of_the_box_in_the_frame() -> None:
    assert inside_fraction(Box((54, 10, 94, 20), "dog"), W, H) == pytest.approx(0.25)
    assert inside_fraction(Box((1, 2, 11, 12), "cat"), W, H) == 1.0
    assert inside_fraction(Box((70, 0, 80, 10), "cat"), W, H) == 0.0


def test_convert_coco_to_multilabel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tiny_coco(tmp_path / "coco")
    assert convert(src, tmp_path / "ml") == 0
    assert labels_by_name(tmp_path / "ml") == EXPECTED
    out = capsys.readouterr().out
    assert "2 boxes below --min-visible 0.3 or --min-area 0 did not count" in out
    assert "2 images without labels kept as negatives" in out
    copied = tmp_path / "ml" / "images" / "train" / "a.jpg"
    assert copied.read_bytes() == (src / "images" / "train" / "a.jpg").read_bytes()
    assert (tmp_path / "ml" / "classes.txt").read_text() == "cat\ndog\n"


def test_min_visible_and_min_area_decide_which_boxes_count(tmp_path: Path) -> None:
    src = tiny_coco(tmp_path / "coco")
    assert convert(src, tmp_path / "loose", "--min-visible", "0.2") == 0
    loose = labels_by_name(tmp_path / "loose")
    assert loose["a.jpg"] == ["cat", "dog"] and loose["b.jpg"] == ["dog"]
    assert convert(src, tmp_path / "big", "--min-area", "0.01") == 0
    assert labels_by_name(tmp_path / "big")["c.jpg"] == []


def test_multilabel_output_round_trips_through_the_loader(tmp_path: Path) -> None:
    assert convert(tiny_coco(tmp_path / "coco"), tmp_path / "ml") == 0
    first = load(tmp_path / "ml")
    assert first.multilabel and first.classes == ["cat", "dog"]
    save(first, tmp_path / "again", "multilabel")
    assert labels_by_name(tmp_path / "again") == labels_by_name(tmp_path / "ml")


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_voc_and_yolo_convert_the_same_way(tmp_path: Path, fmt: str) -> None:
    boxes = load(tiny_coco(tmp_path / "coco"), "coco", slack_px=math.inf)
    save(boxes, tmp_path / fmt, fmt)
    assert convert(tmp_path / fmt, tmp_path / "ml", fmt=fmt) == 0
    assert labels_by_name(tmp_path / "ml") == EXPECTED


def test_boxes_outside_the_frame_are_still_refused_between_detection_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tiny_coco(tmp_path / "coco")
    assert main(["convert", "--to", "yolo", str(src), str(tmp_path / "yolo")]) == 2
    assert "box outside the image" in capsys.readouterr().err


def test_detection_to_folders_stays_refused_with_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["convert", "--to", "folders", str(tiny_coco(tmp_path / "coco")), str(tmp_path / "f")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot convert coco to folders") and "multilabel" in err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--min-visible", "1.5"), ("--min-visible", "-0.1"), ("--min-visible", "nan"),
     ("--min-visible", "most"), ("--min-area", "2")],
)  # fmt: skip
def test_bad_fraction_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assert convert(tmp_path, tmp_path / "out", flag, value) == 2
    assert f"argument {flag}: expected a fraction in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_label_flags_refused_where_no_boxes_become_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tiny_coco(tmp_path / "coco")
    argv = ["convert", "--to", "voc", "--min-visible", "0.5", str(src), str(tmp_path / "voc")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --min-visible: only for boxes becoming image labels")
    assert not (tmp_path / "voc").exists()


def test_from_boxes_refuses_a_bad_share(tmp_path: Path) -> None:
    data = load(tiny_coco(tmp_path / "coco"), "coco", slack_px=math.inf)
    with pytest.raises(DatasetError, match="min_visible must be a fraction in"):
        from_boxes(data, min_visible=1.2)


# ---- synth --format multilabel -----------------------------------------------------------


def scene_labels(kind: str, index: int, seed: int, min_visible: float) -> set[str]:
    _, boxes, visible = render(kind, index, seed, SIZE)
    return {b.label for b, vis in zip(boxes, visible, strict=True) if vis >= min_visible}


@pytest.mark.parametrize("kind", ["shelf", "trail"])
def test_synth_multilabel_labels_are_the_visible_objects(tmp_path: Path, kind: str) -> None:
    for min_visible in (0.3, 0.8):
        out = tmp_path / f"ml{min_visible}"
        generate(kind, 8, out, "multilabel", seed=4, size=SIZE, min_visible=min_visible)
        data = load(out)  # detected as multilabel, read by its loader
        assert data.multilabel and len(data.samples) == 8
        for sample in data.samples:
            index = int(sample.image_path.stem.split("_")[1])
            assert set(sample.labels) == scene_labels(kind, index, 4, min_visible)
            assert sample.labels == [c for c in data.classes if c in sample.labels]


def test_synth_multilabel_is_deterministic_and_matches_converted_coco(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate("trail", 10, tmp_path / name, "multilabel", seed=7, size=SIZE)
    generate("trail", 10, tmp_path / "coco", "coco", seed=7, size=SIZE)
    assert convert(tmp_path / "coco", tmp_path / "converted") == 0
    for csv in ("train.csv", "val.csv"):
        text = (tmp_path / "a" / csv).read_bytes()
        assert text == (tmp_path / "b" / csv).read_bytes()
        assert text == (tmp_path / "converted" / csv).read_bytes()


def test_synth_bad_min_visible_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--kind", "shelf", "--n", "2", "--format", "multilabel", "--min-visible"]
    assert main([*argv, "2", str(tmp_path / "out")]) == 2
    assert "argument --min-visible" in capsys.readouterr().err
