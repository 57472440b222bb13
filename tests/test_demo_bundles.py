"""The committed demo bundles (INT8 ONNX and its INT8 TFLite twin, trained by our trainer) load,
carry the figures of their own evaluation, and agree with each other on the demo scene."""

import json
import re
from collections import Counter
from pathlib import Path

import cv2
import pytest

from edge_agent.bundle import load_bundle
from edge_agent.predictor import Predictor

DEMO = Path(__file__).resolve().parents[1] / "edge_agent" / "demo"
TWINS = [("shelf_bundle", "onnx"), ("shelf_bundle_tflite", "tflite")]


@pytest.mark.parametrize(("folder", "runtime"), TWINS)
def test_bundle_is_complete_and_measured(folder, runtime):
    bundle = load_bundle(DEMO / folder)
    m = bundle.manifest
    assert m.model.format == runtime and m.model.precision == "int8"
    assert m.labels == ["can", "bottle", "box", "bag"]
    # a data check: the committed bundle carries the mAP its export measured on 150 held-out
    # scenes through edge_agent (tools/build_demo_bundle.sh), and it is a good one
    assert m.metrics["mAP50"] >= 0.9
    assert set(m.thresholds.per_class) == set(m.labels)  # best-F1 per class
    assert (DEMO / folder / "report.md").is_file()


def test_twins_agree_on_the_demo_scene():
    scene = cv2.imread(str(DEMO / "assets" / "shelf.jpg"))
    counts = []
    for folder, runtime in TWINS:
        predictor = Predictor(load_bundle(DEMO / folder), runtime, threads=1)
        det = predictor.predict(scene).predictions
        counts.append(Counter(det.class_id.tolist()))
    onnx, tflite = counts
    total = sum(onnx.values())
    assert total >= 15  # the scene holds 19 visible products
    differing = sum(abs(onnx[c] - tflite[c]) for c in range(4))
    assert differing <= 2, (onnx, tflite)


@pytest.mark.parametrize(("folder", "runtime"), TWINS)
def test_reports_name_no_path_of_the_machine_that_built_them(folder, runtime):
    """A signed bundle carries nothing about its build machine: the run is named by its recipe
    and best.pt's hash, the data by its folder name."""
    for name in ("report.md", "report.json", "manifest.json"):
        text = (DEMO / folder / name).read_text()
        assert not re.search(r"(^|[\s`\"'(])/(tmp|home|root|work|Users|var)/", text), name
    report = json.loads((DEMO / folder / "report.json").read_text())
    assert report["run"]["recipe"] == "ssdlite160-shelf-synth"
    assert len(report["run"]["best_pt_sha256"]) == 64
