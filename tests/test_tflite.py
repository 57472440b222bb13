"""LiteRT runtime: the TFLite twins of the hand-built ONNX models agree with them, quantized
inputs and outputs are converted with the tensors' own parameters, outputs found by name.

The .tflite files in tests/data are built by tools/tflite_models.py (litert-torch).
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.analytics.counting import frame_counts
from edge_agent.bundle import load_bundle, write_manifest
from edge_agent.predictor import Predictor
from edge_agent.runtimes import ModelRuntimeError, load_runtime
from tools.toy_models import COLOUR_LABELS, colour_blocks_bundle, colour_matrix

DATA = Path(__file__).parent / "data"


def tflite_bundle(tmp_path: Path, model: str, manifest: dict) -> Path:
    out = tmp_path / model.replace(".", "_")
    out.mkdir()
    shutil.copy(DATA / model, out / model)
    write_manifest(
        out,
        {
            "schema": "edgesight.bundle/1",
            "name": model,
            "version": 1,
            "labels": COLOUR_LABELS,
            "model": {"file": model, "format": "tflite"},
            "files": {model: ""},
            **manifest,
        },
    )
    return out


def blocks_tflite(tmp_path):
    return load_bundle(
        tflite_bundle(
            tmp_path,
            "colour_blocks.tflite",
            {
                "task": "detect",
                "input": {"width": 160, "height": 160, "layout": "NHWC", "color": "RGB"},
                # signature keys of the litert-torch export; tensor names work as well
                "decoder": {
                    "type": "ssd_boxes",
                    "outputs": {"boxes": "output_0", "scores": "output_1"},
                },
                "thresholds": {"score": 0.5, "nms_iou": 0.3},
            },
        )
    )


def classifier_tflite(tmp_path, model):
    return load_bundle(
        tflite_bundle(
            tmp_path,
            model,
            {
                "task": "classify",
                "input": {"width": 32, "height": 32, "layout": "NHWC"},
                "decoder": {"type": "softmax"},
            },
        )
    )


def scene() -> np.ndarray:
    img = np.full((480, 640, 3), 60, np.uint8)
    img[96:192, 128:256] = (0, 0, 255)
    img[288:384, 384:512] = (255, 0, 0)
    img[100:160, 400:460] = (0, 200, 0)  # a partial green block: a lower, non-trivial score
    return img


def test_tflite_and_onnx_twins_agree(tmp_path):
    onnx = Predictor(load_bundle(colour_blocks_bundle(tmp_path / "onnx")), "onnx", threads=1)
    tfl = Predictor(blocks_tflite(tmp_path), "tflite", threads=1)
    a, b = onnx.predict(scene()), tfl.predict(scene())
    assert len(a.predictions) == len(b.predictions) >= 2
    np.testing.assert_array_equal(a.predictions.class_id, b.predictions.class_id)
    np.testing.assert_allclose(a.predictions.xyxy, b.predictions.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.predictions.confidence, b.predictions.confidence, atol=1e-5)
    counts = [frame_counts(p.predictions, COLOUR_LABELS, np.zeros(3)) for p in (a, b)]
    assert counts[0] == counts[1]


def test_outputs_by_tensor_name_and_signature_key(tmp_path):
    rt = load_runtime("tflite", blocks_tflite(tmp_path), threads=1)
    out = rt.run(np.zeros((1, 160, 160, 3), np.float32))
    assert {"output_0", "output_1"} <= set(out)
    tensor_names = [n for n in out if n.startswith("serving_default")]
    assert len(tensor_names) == 2
    assert out["output_1"].shape == (1, 81, 3)


def test_int8_model_quantizes_input_and_dequantizes_output(tmp_path):
    fp32 = Predictor(classifier_tflite(tmp_path, "mean_colour.tflite"), "tflite", threads=1)
    int8_bundle = classifier_tflite(tmp_path, "mean_colour.int8.tflite")
    rt = load_runtime("tflite", int8_bundle, threads=1)
    assert rt._input["dtype"] == np.int8  # the file really has an int8 input
    int8 = Predictor(int8_bundle, "tflite", threads=1)
    # quantized on the capture thread (prepare), so inference gets the file's own dtype
    assert int8.prepare(np.zeros((40, 40, 3), np.uint8)).tensor.dtype == np.int8
    rng = np.random.default_rng(3)
    for _ in range(5):
        img = np.empty((40, 40, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
        ref, got = fp32.predict(img).predictions, int8.predict(img).predictions
        mean_rgb = img[0, 0, ::-1] / 255
        logits = mean_rgb @ (colour_matrix() * 4)
        expected = np.exp(logits) / np.exp(logits).sum()
        np.testing.assert_allclose(ref.scores, expected, atol=1e-5)
        # one int8 step of the logits (scale 0.037) moves a probability by at most ~0.02
        np.testing.assert_allclose(got.scores, expected, atol=0.03)
        assert got.top(1)[0][0] == ref.top(1)[0][0]


def test_missing_tflite_package_names_the_extra(tmp_path, monkeypatch):
    bundle = blocks_tflite(tmp_path)
    for name in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
        "edge_agent.runtimes.tflite",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "edge_agent.runtimes.tflite")
    with pytest.raises(ModelRuntimeError, match=r"pip install 'edgesight\[tflite\]'"):
        load_runtime("tflite", bundle)


def test_broken_tflite_file(tmp_path):
    path = tflite_bundle(
        tmp_path,
        "colour_blocks.tflite",
        {
            "task": "detect",
            "input": {"width": 160, "height": 160, "layout": "NHWC"},
            "decoder": {
                "type": "ssd_boxes",
                "outputs": {"boxes": "output_0", "scores": "output_1"},
            },
        },
    )
    (path / "colour_blocks.tflite").write_bytes(b"TFL3 but not really")
    import json

    write_manifest(path, json.loads((path / "manifest.json").read_text()))
    with pytest.raises(ModelRuntimeError, match="TFLite interpreter cannot load the model"):
        load_runtime("tflite", load_bundle(path))


def test_runtime_defaults_to_the_bundles_format(tmp_path):
    predictor = Predictor(blocks_tflite(tmp_path), threads=1)  # no runtime named
    assert type(predictor.runtime).__name__ == "TfliteRuntime"
    detections = predictor.predict(scene()).predictions
    assert frame_counts(detections, COLOUR_LABELS, predictor.thresholds)["red"] == 1
