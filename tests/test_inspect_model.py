"""inspect-model prints what a model takes and gives and writes a manifest to complete."""

import json
import shutil
import sys
from pathlib import Path

from edge_agent.bundle import load_bundle
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
    assert len(skeleton["labels"]) == 3 and skeleton["task"] == "detect"


def test_completed_skeleton_loads_as_a_bundle(tmp_path):
    model = mean_colour_classifier(tmp_path / "cls.onnx")
    assert main(["inspect-model", str(model), "--manifest", str(tmp_path / "manifest.json")]) == 0
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["labels"] = ["red", "green", "blue"]  # the only part a person must fill in here
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    bundle = load_bundle(tmp_path)
    assert bundle.manifest.decoder.type == "softmax"


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
