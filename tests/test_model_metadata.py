"""inspect-model fills labels, colour order and normalisation only from what the file states:
ONNX metadata_props and TFLite model metadata with its appended label files."""

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import helper

from edge_agent.bundle import load_bundle
from edge_agent.bundle.load import todo_paths
from edge_agent.cli import main
from edge_agent.runtimes.metadata import parse_label_list
from tools.toy_models import colour_blocks_detector, mean_colour_classifier

DATA = Path(__file__).parent / "data"


def with_props(model: Path, **props: str) -> Path:
    proto = onnx.load(str(model))
    helper.set_model_props(proto, props)
    onnx.save(proto, str(model))
    return model


def skeleton(model: Path, capsys=None) -> dict:
    out = model.with_name("manifest.json")
    assert main(["inspect-model", str(model), "--manifest", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("{0: 'red', 1: 'green', 2: 'blue'}", ["red", "green", "blue"]),  # Ultralytics names
        ('["red", "green", "blue"]', ["red", "green", "blue"]),
        ('{"0": "red", "1": "green"}', ["red", "green"]),
        ("{1: 'red', 2: 'green'}", None),  # ids must be 0..n-1, else the order is unknown
        ("red, green", None),  # not a list: not guessed at
        ("[1, 2]", None),
        ("__import__('os')", None),
        ("", None),
    ],
)
def test_parse_label_list(text, labels):
    assert parse_label_list(text) == labels


def test_onnx_labels_and_custom_vision_image_keys(tmp_path):
    model = with_props(
        mean_colour_classifier(tmp_path / "model.onnx"),
        names="{0: 'red', 1: 'green', 2: 'blue'}",
        **{"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"},
    )
    data = skeleton(model)
    assert data["labels"] == ["red", "green", "blue"]
    assert data["input"]["color"] == "BGR"
    assert (data["input"]["scale"], data["input"]["mean"], data["input"]["std"]) == (
        1.0,
        [0.0] * 3,
        [1.0] * 3,
    )
    assert todo_paths(data) == ["input.resize", "decoder.type", "decoder.from_logits"]


def test_onnx_without_metadata_leaves_labels_todo(tmp_path, capsys):
    data = skeleton(mean_colour_classifier(tmp_path / "model.onnx"))
    assert data["labels"] == "TODO" and data["input"]["color"] == "TODO"
    assert "labels               3 class names in score-column order" in capsys.readouterr().out


def test_onnx_labels_that_do_not_fit_the_scores_stay_todo(tmp_path, capsys):
    model = with_props(mean_colour_classifier(tmp_path / "model.onnx"), labels='["a", "b"]')
    assert skeleton(model)["labels"] == "TODO"
    assert "lists 2 names for 3 score columns" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("names", "labels", "background"),
    [
        ('["red", "green", "blue"]', ["red", "green", "blue"], None),  # no background column
        ('["background", "red", "green"]', ["red", "green"], 0),  # the file names it
        ('["red", "green"]', ["red", "green"], "TODO"),  # one column more: which is unknown
    ],
)
def test_background_column_is_never_a_label(tmp_path, names, labels, background):
    model = with_props(colour_blocks_detector(tmp_path / "model.onnx"), labels=names)
    data = skeleton(model)
    assert data["labels"] == labels
    assert data["decoder"]["background_class"] == background


def tflite_with_labels(tmp_path: Path, source: str, **kw) -> Path:
    meta = pytest.importorskip("tests.helpers.tflite_metadata")
    files = kw.pop("files", {"labelmap.txt": "red\ngreen\nblue\n"})
    metadata = meta.model_metadata("labelmap.txt", **kw)
    return meta.with_metadata(DATA / source, tmp_path / "model.tflite", metadata, files)


def test_tflite_label_file_and_normalisation(tmp_path, capsys):
    model = tflite_with_labels(tmp_path, "mean_colour.tflite", mean=[0.0], std=[255.0], rgb=True)
    data = skeleton(model)
    out = capsys.readouterr().out
    assert data["labels"] == ["red", "green", "blue"]
    assert "label file labelmap.txt of output 0" in out
    assert data["input"]["color"] == "RGB"
    assert (data["input"]["scale"], data["input"]["mean"], data["input"]["std"]) == (
        1.0,
        [0.0] * 3,
        [255.0] * 3,
    )
    data["decoder"].update(type="softmax", from_logits=True)
    data["input"]["resize"] = "stretch"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert load_bundle(tmp_path).manifest.labels == ["red", "green", "blue"]


def test_quantized_tflite_needs_no_mean_std(tmp_path, capsys):
    model = tflite_with_labels(tmp_path, "mean_colour.int8.tflite")
    data = skeleton(model)
    assert data["labels"] == ["red", "green", "blue"] and data["input"]["dtype"] == "int8"
    assert not {"scale", "mean", "std"} & set(data["input"])
    assert "raw pixels go in as they are" in capsys.readouterr().out


def test_tflite_label_file_missing_from_the_zip_is_a_note(tmp_path, capsys):
    model = tflite_with_labels(tmp_path, "mean_colour.tflite", files={"other.txt": "x"})
    assert skeleton(model)["labels"] == "TODO"
    assert "labelmap.txt, which cannot be read" in capsys.readouterr().out


def test_tflite_without_metadata(tmp_path):
    shutil.copy(DATA / "colour_blocks.tflite", tmp_path / "model.tflite")
    data = skeleton(tmp_path / "model.tflite")
    assert data["labels"] == "TODO" and data["input"]["layout"] == "NHWC"


def test_todo_paths():
    data = {"labels": ["a", "TODO"], "input": {"mean": "TODO"}, "x": {"TODO": 1}, "n": 3}
    assert todo_paths(data) == ["labels[1]", "input.mean", "x.TODO"]


def test_onnx_image_metadata_is_read_whatever_its_case():
    """inspect-model and the start-up check read the same keys the same way (the ONNX
    metadata spec makes keys case-insensitive; files spell values Bgr8 or BGR8)."""
    from edge_agent.runtimes.metadata import onnx_facts

    facts = onnx_facts(
        {"image.bitmappixelformat": "BGR8", "IMAGE.NOMINALPIXELRANGE": "nominalrange_0_255"}
    )
    assert facts.facts["input.color"].value == "BGR"
    assert facts.facts["input.scale"].value == 1.0
