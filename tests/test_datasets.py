"""Dataset formats: load and save of each, the COCO->VOC->YOLO->COCO round trip, validation."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.datasets import (
    Box,
    Dataset,
    DatasetError,
    Sample,
    conversion_problem,
    detect_format,
    load,
    save,
    split,
    validate,
)
from trainer.datasets.core import MAX_LISTED_PROBLEMS
from trainer.datasets.imagesize import read_size
from trainer.synth import generate

SIZE = (160, 160)


def write_image(path: Path, width: int = 64, height: int = 48, ext: str = ".jpg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), 127, np.uint8)
    ok, data = cv2.imencode(ext, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def make_detect(tmp: Path, boxes: list[list[Box]], split_names: list[str] | None = None) -> Dataset:
    """A detection dataset of 64x48 grey images, one per entry of ``boxes``."""
    samples = []
    for i, image_boxes in enumerate(boxes):
        path = write_image(tmp / "src" / f"img{i}.jpg")
        name = split_names[i] if split_names else ""
        samples.append(Sample(path, 64, 48, boxes=image_boxes, split=name))
    return Dataset("detect", ["cat", "dog"], samples)


def box_table(dataset: Dataset) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Boxes by image file name, sorted, so two loads of one dataset can be compared."""
    return {s.image_path.name: sorted((b.label, b.xyxy) for b in s.boxes) for s in dataset.samples}


def assert_same_boxes(a: Dataset, b: Dataset, tol_px: float = 1.0) -> None:
    """Same images, and every box of ``a`` matched one-to-one by a same-label box of ``b``."""
    ta, tb = box_table(a), box_table(b)
    assert ta.keys() == tb.keys()
    for name, boxes in ta.items():
        left = list(tb[name])
        assert len(boxes) == len(left), name
        for label, xyxy in boxes:
            match = next(
                (i for i, (lb, xb) in enumerate(left)
                 if lb == label and np.abs(np.subtract(xyxy, xb)).max() <= tol_px),
                None,
            )  # fmt: skip
            assert match is not None, f"{name}: no {label} box within {tol_px} px of {xyxy}"
            left.pop(match)


@pytest.fixture(scope="module")
def shelf_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "shelf_coco"
    generate("shelf", 12, out, "coco", seed=3, size=SIZE)
    return out


@pytest.fixture(scope="module")
def shelf_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "shelf_folders"
    generate("shelf", 6, out, "folders", seed=3, size=SIZE)
    return out


# ---- load / save per format -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_detection_save_then_load_keeps_boxes(shelf_coco: Path, tmp_path: Path, fmt: str) -> None:
    original = load(shelf_coco)
    save(original, tmp_path / fmt, fmt)
    assert detect_format(tmp_path / fmt) == fmt
    again = load(tmp_path / fmt)
    assert again.classes == original.classes
    assert sorted(again.split_names()) == ["train", "val"]
    assert_same_boxes(original, again)


def test_round_trip_coco_voc_yolo_coco_within_one_pixel(shelf_coco: Path, tmp_path: Path) -> None:
    coco = load(shelf_coco, "coco")
    save(coco, tmp_path / "voc", "voc")
    save(load(tmp_path / "voc", "voc"), tmp_path / "yolo", "yolo")
    save(load(tmp_path / "yolo", "yolo"), tmp_path / "coco", "coco")
    back = load(tmp_path / "coco", "coco")
    assert sum(len(s.boxes) for s in back.samples) == sum(len(s.boxes) for s in coco.samples)
    assert {s.image_path.name: s.split for s in back.samples} == {
        s.image_path.name: s.split for s in coco.samples
    }
    assert_same_boxes(coco, back)


def test_classification_folders_multilabel_round_trip(shelf_folders: Path, tmp_path: Path) -> None:
    folders = load(shelf_folders)
    assert folders.task == "classify" and not folders.multilabel
    assert folders.classes == ["bag", "bottle", "box", "can"]
    save(folders, tmp_path / "ml", "multilabel")
    ml = load(tmp_path / "ml")
    assert ml.multilabel and detect_format(tmp_path / "ml") == "multilabel"
    save(ml, tmp_path / "back", "folders")
    back = load(tmp_path / "back", "folders")
    labels = {s.image_path.name: s.labels for s in folders.samples}
    assert {s.image_path.name: s.labels for s in back.samples} == labels


def test_folder_flat_layout_and_empty_class(tmp_path: Path) -> None:
    write_image(tmp_path / "data" / "cat" / "a.jpg")
    write_image(tmp_path / "data" / "dog" / "sub" / "b.png", ext=".png")
    (tmp_path / "data" / "fox").mkdir()
    (tmp_path / "data" / "cat" / "notes.txt").write_text("ignored")
    data = load(tmp_path / "data")
    assert data.classes == ["cat", "dog", "fox"]
    assert sorted((s.image_path.name, s.labels[0], s.split) for s in data.samples) == [
        ("a.jpg", "cat", ""),
        ("b.png", "dog", ""),
    ]


def test_multilabel_csv_with_empty_and_multiple_labels(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "a.jpg")
    write_image(tmp_path / "imgs" / "b.jpg")
    (tmp_path / "labels.csv").write_text("path,labels\nimgs/a.jpg,cat;dog\nimgs/b.jpg,\n")
    data = load(tmp_path / "labels.csv")
    assert data.multilabel and data.classes == ["cat", "dog"]
    assert [s.labels for s in data.samples] == [["cat", "dog"], []]
    with pytest.raises(DatasetError, match="exactly one label"):
        save(data, tmp_path / "out", "folders")


def test_yolo_polygon_line_is_read_as_its_bounding_box(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "train" / "a.jpg", 100, 50)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.8\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a, b]\n")
    data = load(tmp_path)
    (box,) = data.samples[0].boxes
    assert box.label == "b"
    np.testing.assert_allclose(box.xyxy, (10, 10, 50, 40))


def test_voc_difficult_flag_survives_coco(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((1, 2, 30, 40), "cat", difficult=True)]])
    save(data, tmp_path / "voc", "voc")
    save(load(tmp_path / "voc"), tmp_path / "coco", "coco")
    assert load(tmp_path / "coco").samples[0].boxes[0].difficult


def test_writers_refuse_a_non_empty_output(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((1, 2, 30, 40), "cat")]])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        save(data, tmp_path / "out", "coco")


def test_detection_cannot_become_classification(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((1, 2, 30, 40), "cat")]])
    with pytest.raises(DatasetError, match="classify"):
        save(data, tmp_path / "out", "folders")
    assert "dropped" in (conversion_problem("coco", "folders") or "")
    assert conversion_problem("folders", "multilabel") is None
    assert "cannot convert" in (conversion_problem("multilabel", "yolo") or "")


def test_split_is_deterministic_and_stratified(tmp_path: Path) -> None:
    boxes = [[Box((1, 1, 10, 10), "cat")]] * 20 + [[Box((1, 1, 10, 10), "dog")]] * 10
    data = make_detect(tmp_path, boxes)
    a, b = split(data, 0.2, seed=1), split(data, 0.2, seed=1)
    assert [s.split for s in a.samples] == [s.split for s in b.samples]
    val = [s for s in a.samples if s.split == "val"]
    assert sorted(s.boxes[0].label for s in val) == ["cat"] * 4 + ["dog"] * 2
    c = split(data, 0.2, seed=2)
    assert [s.split for s in c.samples] != [s.split for s in a.samples]


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_header_size_matches_decoder(tmp_path: Path, ext: str) -> None:
    path = write_image(tmp_path / f"a{ext}", 37, 21, ext)
    assert read_size(path) == (37, 21)


def test_jpeg_exif_rotation_swaps_size_like_opencv(tmp_path: Path) -> None:
    jpeg = write_image(tmp_path / "plain.jpg", 40, 20).read_bytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"Exif\x00\x00" + tiff
    rotated = tmp_path / "rotated.jpg"
    rotated.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])
    decoded = cv2.imread(str(rotated))
    assert read_size(rotated) == (decoded.shape[1], decoded.shape[0]) == (20, 40)


# ---- validation: each problem names its file ---------------------------------------------


def coco_doc(images: list[dict], annotations: list[dict]) -> dict:
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}


def write_coco(tmp: Path, doc: dict, image_names: tuple[str, ...] = ("a.jpg",)) -> Path:
    for name in image_names:
        write_image(tmp / "images" / "train" / name)
    (tmp / "annotations").mkdir(parents=True, exist_ok=True)
    path = tmp / "annotations" / "instances_train.json"
    path.write_text(json.dumps(doc))
    return tmp


IMG = {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}
ANN = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}


def problems_of(path: Path, fmt: str | None = None) -> str:
    with pytest.raises(DatasetError) as info:
        load(path, fmt)
    return str(info.value)


def test_missing_image_names_annotation_and_image(tmp_path: Path) -> None:
    doc = coco_doc([IMG, {**IMG, "id": 2, "file_name": "gone.jpg"}], [ANN])
    msg = problems_of(write_coco(tmp_path, doc))
    assert "instances_train.json image id 2" in msg and "missing image" in msg
    assert "gone.jpg" in msg


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "train" / "ok.jpg")
    (tmp_path / "images" / "train" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [cat]\n")
    msg = problems_of(tmp_path)
    assert "unreadable image" in msg and "broken.jpg" in msg


def yolo_problems(root: Path, labels: str) -> str:
    """The problems of a one-image, one-class YOLO dataset whose a.txt holds ``labels``."""
    write_image(root / "images" / "train" / "a.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(labels)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [cat]\n")
    return problems_of(root)


def test_box_outside_image_names_label_file_and_line(tmp_path: Path) -> None:
    msg = yolo_problems(tmp_path, "0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.4 0.2\n")
    assert "labels/train/a.txt line 2" in msg and "outside the image" in msg


def test_box_within_one_pixel_is_clipped_not_refused(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((-0.8, 0.0, 64.9, 48.5), "cat")]])
    save(data, tmp_path / "coco", "coco")
    (box,) = load(tmp_path / "coco").samples[0].boxes
    assert box.xyxy == (0.0, 0.0, 64.0, 48.0)


def test_zero_area_box_names_annotation_id(tmp_path: Path) -> None:
    doc = coco_doc([IMG], [{**ANN, "bbox": [5, 5, 0, 10]}])
    msg = problems_of(write_coco(tmp_path, doc))
    assert "instances_train.json annotation id 7" in msg and "zero-area" in msg


def test_unknown_class_coco(tmp_path: Path) -> None:
    doc = coco_doc([IMG], [{**ANN, "category_id": 99}])
    msg = problems_of(write_coco(tmp_path, doc))
    assert "instances_train.json annotation id 7" in msg and "unknown class" in msg


def test_unknown_class_yolo(tmp_path: Path) -> None:
    msg = yolo_problems(tmp_path, "3 0.5 0.5 0.2 0.2\n")
    assert "labels/train/a.txt line 1" in msg and "unknown class id 3" in msg


def test_unknown_class_voc(tmp_path: Path) -> None:
    save(make_detect(tmp_path, [[Box((1, 2, 30, 40), "cat")]]), tmp_path / "voc", "voc")
    (tmp_path / "voc" / "classes.txt").write_text("dog\n")
    msg = problems_of(tmp_path / "voc")
    assert "Annotations/img0.xml object 1" in msg and "unknown class 'cat'" in msg


def test_unknown_class_multilabel(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    (tmp_path / "classes.txt").write_text("cat\n")
    (tmp_path / "labels.csv").write_text("path,labels\na.jpg,cat;wolf\n")
    msg = problems_of(tmp_path)
    assert "labels.csv line 2" in msg and "unknown class 'wolf'" in msg


def test_duplicate_coco_image_id(tmp_path: Path) -> None:
    doc = coco_doc([IMG, {**IMG, "file_name": "b.jpg"}], [ANN])
    msg = problems_of(write_coco(tmp_path, doc, ("a.jpg", "b.jpg")))
    assert "instances_train.json: duplicate image id 1" in msg


def test_duplicate_coco_annotation_id(tmp_path: Path) -> None:
    msg = problems_of(write_coco(tmp_path, coco_doc([IMG], [ANN, ANN])))
    assert "instances_train.json: duplicate annotation id 7" in msg


def test_duplicate_file_name(tmp_path: Path) -> None:
    doc = coco_doc([IMG, {**IMG, "id": 2}], [ANN])
    msg = problems_of(write_coco(tmp_path, doc))
    assert "instances_train.json image id 2: duplicate file name 'a.jpg'" in msg


def test_duplicate_id_in_voc_split_lists(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((1, 2, 30, 40), "cat")]], ["train"])
    save(data, tmp_path / "voc", "voc")
    (tmp_path / "voc" / "ImageSets" / "Main" / "val.txt").write_text("img0\n")
    msg = problems_of(tmp_path / "voc")
    assert "ImageSets/Main/val.txt line 1: duplicate id 'img0'" in msg


def test_empty_split_names_its_list_file(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((1, 2, 30, 40), "cat")]], ["train"])
    save(data, tmp_path / "voc", "voc")
    (tmp_path / "voc" / "ImageSets" / "Main" / "val.txt").write_text("")
    msg = problems_of(tmp_path / "voc")
    assert "ImageSets/Main/val.txt: split 'val' is empty" in msg


def test_empty_split_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "cat" / "a.jpg")
    (tmp_path / "val" / "cat").mkdir(parents=True)
    msg = problems_of(tmp_path, "folders")
    assert "val/: split 'val' is empty" in msg


def test_image_size_mismatch_is_named(tmp_path: Path) -> None:
    doc = coco_doc([{**IMG, "width": 640}], [ANN])
    msg = problems_of(write_coco(tmp_path, doc))
    assert "instances_train.json image id 1" in msg and "640x48" in msg and "64x48" in msg


def test_bad_csv_header_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,tags\na.jpg,cat\n")
    msg = problems_of(tmp_path / "labels.csv")
    assert "labels.csv line 1" in msg and "path,labels" in msg


def test_malformed_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text("{not json")
    assert "instances_val.json: not readable as JSON" in problems_of(tmp_path, "coco")


def test_all_problems_are_collected_and_capped(tmp_path: Path) -> None:
    anns = [{**ANN, "id": i, "category_id": 50 + i} for i in range(25)]
    with pytest.raises(DatasetError) as info:
        load(write_coco(tmp_path, coco_doc([IMG], anns)))
    assert len(info.value.problems) == 25
    msg = str(info.value)
    assert "25 problems" in msg and "and 5 more" in msg
    assert msg.count("unknown class") == MAX_LISTED_PROBLEMS


def test_validate_returns_list_without_raising(tmp_path: Path) -> None:
    data = make_detect(tmp_path, [[Box((10, 10, 5, 20), "cat"), Box((1, 1, 9, 9), "owl")]])
    found = validate(data)
    assert any("zero-area" in p for p in found) and any("'owl'" in p for p in found)


def test_coco_2017_layout_and_cvat_default_split(tmp_path: Path) -> None:
    for split_dir in ("train2017", "val2017"):
        write_image(tmp_path / split_dir / "a.jpg")
        doc = coco_doc([IMG], [ANN])
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split_dir}.json").write_text(json.dumps(doc))
    data = load(tmp_path)
    assert sorted(s.split for s in data.samples) == ["train", "val"]
    cvat = tmp_path / "cvat"
    write_image(cvat / "images" / "a.jpg")
    (cvat / "annotations").mkdir()
    (cvat / "annotations" / "instances_default.json").write_text(json.dumps(coco_doc([IMG], [])))
    assert [s.split for s in load(cvat).samples] == [""]


@settings(max_examples=25, deadline=None)
@given(
    size=st.tuples(st.integers(8, 400), st.integers(8, 400)),
    corners=st.lists(
        st.tuples(
            *[st.floats(0.0, 1.0, allow_subnormal=False)] * 4, st.sampled_from(["cat", "dog"])
        ),
        min_size=0,
        max_size=6,
    ),
)
def test_any_boxes_survive_coco_voc_yolo_coco(size: tuple[int, int], corners: list) -> None:
    width, height = size
    boxes = []
    for a, b, c, d, label in corners:
        x1, x2 = sorted((a * width, c * width))
        y1, y2 = sorted((b * height, d * height))
        if x2 - x1 >= 2 and y2 - y1 >= 2:  # VOC keeps at least 1 px, so tiny boxes may grow
            boxes.append(Box((x1, y1, x2, y2), label))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        path = write_image(tmp / "src" / "a.png", width, height, ".png")
        data = Dataset("detect", ["cat", "dog"], [Sample(path, width, height, boxes=boxes)])
        save(data, tmp / "coco", "coco")
        save(load(tmp / "coco"), tmp / "voc", "voc")
        save(load(tmp / "voc"), tmp / "yolo", "yolo")
        save(load(tmp / "yolo"), tmp / "back", "coco")
        assert_same_boxes(data, load(tmp / "back"))
