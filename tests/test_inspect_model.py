"""inspect-model prints what a model takes and gives and writes a manifest to complete."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from edge_agent.bundle import BundleError, load_bundle
from edge_agent.cli import main
from tools.toy_models import colour_blocks_detector, mean_colour_classifier

DATA = Path(__file__).parent / "data"


def test_onnx_detector_report_and_skeleton(tmp_path, capsys):
    model = colour_blocks_detector(tmp_path / "det.onnx")
    assert main(["inspect-model", str(model), "--manifest", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "images" in out and "[1, 3, 160, 160]" in out and "scores" in out
    skeleton = json.loads((tmp_path / "m.json").read_text())
    assert skeleton["input"]["layout"] == "NCHW" and skeleton["input"]["width"] == 160
    assert skeleton["decoder"]["outputs"] == {"boxes": "boxes", "scores": "scores"}
    assert skeleton["task"] == "detect"
    # Nothing the file does not state is guessed: not the labels (3 score columns may hold a
    # background column), not the decoder type, box format, activation or normalisation.
    assert skeleton["labels"] == "TODO"
    decoder = skeleton["decoder"]
    for key in ("type", "box_format", "normalized", "score_activation", "background_class"):
        assert decoder[key] == "TODO", key
    assert decoder["box_coder"] == {"order": "TODO", "weights": "TODO"}
    for key in ("color", "scale", "mean", "std", "resize"):
        assert skeleton["input"][key] == "TODO", key
    todo = out[out.index("TODO: 14 fields") :]
    for path in ("labels", "input.mean", "decoder.box_coder.order", "decoder.background_class"):
        assert f"\n  {path} " in todo, path
    assert "docs/bundle.md#todo-fields" in todo and "3 class names" in todo


def _complete_classifier(data: dict) -> dict:
    """What a person fills in for tools/toy_models' mean-colour classifier."""
    data["labels"] = ["red", "green", "blue"]
    data["decoder"].update(type="softmax", from_logits=True)
    data["input"].update(color="RGB", scale=1 / 255, mean=[0, 0, 0], std=[1, 1, 1])
    data["input"]["resize"] = "stretch"
    return data


def test_completed_skeleton_loads_as_a_bundle(tmp_path):
    model = mean_colour_classifier(tmp_path / "cls.onnx")
    assert main(["inspect-model", str(model), "--manifest", str(tmp_path / "manifest.json")]) == 0
    data = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(_complete_classifier(data)))
    bundle = load_bundle(tmp_path)
    assert bundle.manifest.decoder.type == "softmax"
    assert bundle.manifest.input.layout == "NCHW" and bundle.manifest.input.width == 32


def test_skeleton_todos_are_refused_with_every_path(tmp_path):
    model = colour_blocks_detector(tmp_path / "model.onnx")
    assert main(["inspect-model", str(model), "--manifest", str(tmp_path / "manifest.json")]) == 0
    with pytest.raises(BundleError) as err:
        load_bundle(tmp_path)
    message = str(err.value)
    paths = message.split("still TODO: ")[1].split(";")[0].split(", ")
    assert sorted(paths) == sorted(
        [
            "labels",
            "input.color",
            "input.scale",
            "input.mean",
            "input.std",
            "input.resize",
            "decoder.type",
            "decoder.box_format",
            "decoder.normalized",
            "decoder.anchor_generator",
            "decoder.box_coder.order",
            "decoder.box_coder.weights",
            "decoder.score_activation",
            "decoder.background_class",
        ]
    )
    assert "docs/bundle.md" in message


def test_check_config_refuses_a_todo_manifest(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    model = mean_colour_classifier(tmp_path / "b" / "model.onnx")
    assert (
        main(["inspect-model", str(model), "--manifest", str(model.with_name("manifest.json"))])
        == 0
    )
    (tmp_path / "agent.yaml").write_text(
        f"model:\n  bundle: {tmp_path / 'b'}\nsources:\n  - id: cam\n    uri: rtsp://192.0.2.10/s\n"
        "mqtt:\n  host: localhost\n"
    )
    capsys.readouterr()
    assert main(["check-config", str(tmp_path / "agent.yaml")]) == 2
    err = capsys.readouterr().err
    assert "still TODO: labels, input.color" in err and "decoder.from_logits" in err


def test_tflite_quantization_is_shown(tmp_path, capsys):
    model = tmp_path / "q.tflite"
    shutil.copy(DATA / "mean_colour.int8.tflite", model)
    assert main(["inspect-model", str(model), "--manifest", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "zero_point=-128" in out
    skeleton = json.loads((tmp_path / "m.json").read_text())
    assert skeleton["model"]["precision"] == "int8" and skeleton["input"]["layout"] == "NHWC"


def test_bad_files(tmp_path, capsys):
    assert main(["inspect-model", str(tmp_path / "nope.onnx")]) == 2
    (tmp_path / "x.pb").write_bytes(b"x")
    assert main(["inspect-model", str(tmp_path / "x.pb")]) == 2
    assert "expected a .onnx or .tflite file" in capsys.readouterr().err


def test_onnx_dtype_names(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edge_agent.runtimes.inspect import read_tensors

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "half.onnx")
    _, inputs, outputs = read_tensors(tmp_path / "half.onnx")
    assert (inputs[0].dtype, outputs[0].dtype) == ("float32", "float16")  # not "float3216"


def test_missing_tflite_package_names_the_extra(tmp_path, monkeypatch, capsys):
    model = tmp_path / "q.tflite"
    shutil.copy(DATA / "mean_colour.int8.tflite", model)
    for name in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
    ):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    assert main(["inspect-model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'edgesight[tflite]'" in err
    assert "No module named" not in err and "Traceback" not in err


def test_unreadable_model_is_a_clean_error(tmp_path, capsys):
    for name in ("bad.onnx", "bad.tflite"):
        (tmp_path / name).write_bytes(b"not a model")
        assert main(["inspect-model", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err.startswith("error: ")
