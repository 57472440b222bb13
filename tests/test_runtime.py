"""ONNX runtime: loads with names from the manifest, warms up, and fails clearly."""

import json
import logging
import sys

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.bundle import load_bundle, write_manifest
from edge_agent.runtimes import ModelRuntimeError, list_runtimes, load_runtime
from edge_agent.runtimes.onnx import OnnxOptions, choose_providers
from tools.toy_models import colour_blocks_bundle


def test_runs_and_names_outputs(tmp_path):
    bundle = load_bundle(colour_blocks_bundle(tmp_path / "b"))
    rt = load_runtime("onnx", bundle, threads=1)
    out = rt.run(np.zeros((1, 3, 160, 160), np.float32))
    assert rt.input_name == "images"
    assert sorted(out) == ["boxes", "scores"] and out["scores"].shape == (1, 81, 3)


def test_unknown_runtime_lists_choices(tmp_path):
    bundle = load_bundle(colour_blocks_bundle(tmp_path / "b"))
    choices = r"unknown runtime 'tensorrt'; choose one of \['onnx', 'tflite'\]"
    with pytest.raises(ValueError, match=choices):
        load_runtime("tensorrt", bundle)
    assert "onnx" in list_runtimes()


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    bundle = load_bundle(colour_blocks_bundle(tmp_path / "b"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a device without it sees
    monkeypatch.delitem(sys.modules, "edge_agent.runtimes.onnx", raising=False)
    with pytest.raises(ModelRuntimeError, match=r"pip install 'edgesight\[onnx\]'"):
        load_runtime("onnx", bundle)


def test_broken_model_file_is_a_clear_error(tmp_path):
    path = colour_blocks_bundle(tmp_path / "b")
    (path / "model.onnx").write_bytes(b"\x08\x07not really onnx")
    manifest = json.loads((path / "manifest.json").read_text())
    write_manifest(path, manifest)  # re-hash so only the content is wrong
    with pytest.raises(ModelRuntimeError, match=r"model\.onnx: onnxruntime cannot load the model"):
        load_runtime("onnx", load_bundle(path))


def test_input_name_and_dtype_must_match_the_model(tmp_path):
    path = colour_blocks_bundle(tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["input"]["name"] = "pixels"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRuntimeError, match=r"'pixels' is not a model input.*\['images'\]"):
        load_runtime("onnx", load_bundle(path))
    manifest["input"]["name"] = "images"
    manifest["input"]["dtype"] = "uint8"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRuntimeError, match=r"input.dtype 'uint8'.*tensor\(float\)"):
        load_runtime("onnx", load_bundle(path))


def test_provider_choice_on_this_machine(caplog):
    chosen, why = choose_providers(None)
    assert chosen[-1] == "CPUExecutionProvider" and "fastest available" in why
    chosen, why = choose_providers(["CUDAExecutionProvider"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # no GPU here
        assert chosen == ["CPUExecutionProvider"]
        assert "['CUDAExecutionProvider'] not available" in why


def test_requested_provider_missing_is_logged_once(tmp_path, caplog):
    bundle = load_bundle(colour_blocks_bundle(tmp_path / "b"))
    with caplog.at_level(logging.INFO, logger="edge_agent.runtimes.onnx"):
        rt = load_runtime(
            "onnx",
            bundle,
            threads=1,
            options=OnnxOptions(
                providers=["TensorrtExecutionProvider"], graph_optimization="basic"
            ),
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"on {rt.provider}" in lines[0]
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert "TensorrtExecutionProvider" in lines[0] and "not available" in lines[0]
