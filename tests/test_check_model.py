"""Predictor.prove: the model against its manifest, on real onnxruntime / LiteRT runs of tiny
models, and the three places that use it: check-config, check-bundle and the agent's start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from edge_agent.bundle import BundleError, load_bundle, write_manifest
from edge_agent.bundle.manifest import Decoder
from edge_agent.cli import main
from edge_agent.config import AgentConfig
from edge_agent.decoders import DECODERS
from edge_agent.decoders.check import CHECKS, Problem
from edge_agent.pipeline import Agent
from edge_agent.predictor import prove_bundle
from tests.helpers.models import (
    GENERATOR,
    GRID,
    classifier_bundle,
    detections_bundle,
    ssd_anchors_bundle,
    ssd_boxes_bundle,
    ssd_head_bundle,
    tflite_classifier_bundle,
    yolo_regions_bundle,
)
from trainer.signing_cli import pack_bundle

DEMO = Path(__file__).resolve().parents[1] / "edge_agent" / "demo"


def prove(folder: Path, runtime: str | None = None) -> list[Problem]:
    return prove_bundle(load_bundle(folder), runtime, threads=1)


def fields(problems: list[Problem]) -> list[str]:
    return [p.field for p in problems]


def test_every_decoder_type_has_a_check():
    union = get_args(Decoder)[0]
    types = {get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(union)}
    assert set(CHECKS) == types == set(DECODERS)


# --- correct bundles of each decoder type prove OK ------------------------------------------

CORRECT = {
    "softmax": lambda out: classifier_bundle(out),
    "softmax, graph ends in softmax": lambda out: classifier_bundle(
        out, softmax_in_graph=True, decoder={"type": "softmax", "from_logits": False}
    ),
    "sigmoid": lambda out: classifier_bundle(out, decoder={"type": "sigmoid"}, multilabel=True),
    "ssd_boxes": ssd_boxes_bundle,
    "ssd_anchors, file": ssd_anchors_bundle,
    "ssd_anchors, generator": lambda out: ssd_anchors_bundle(out, generator=GENERATOR),
    "detections": detections_bundle,
    "tflite_detection_postprocess": lambda out: detections_bundle(
        out, "tflite_detection_postprocess"
    ),
    "yolo_regions": yolo_regions_bundle,
    "softmax, tflite": tflite_classifier_bundle,
}


@pytest.mark.parametrize("case", list(CORRECT))
def test_a_bundle_that_fits_proves_ok(tmp_path, case):
    assert prove(CORRECT[case](tmp_path / "b")) == []


@pytest.mark.parametrize("name", ["shelf_bundle", "shelf_bundle_tflite"])
def test_the_demo_bundles_prove_ok(name):
    assert prove(DEMO / name) == []


# --- each mismatch names its field, what the model needs and what the manifest says ---------


def test_a_wrong_output_name(tmp_path):
    bundle = ssd_boxes_bundle(
        tmp_path / "b", decoder={"type": "ssd_boxes", "outputs": {"boxes": "boxes", "scores": "s"}}
    )
    assert [str(p) for p in prove(bundle)] == [
        "decoder.outputs.scores: expected one of the model's outputs ['boxes', 'scores'], found 's'"
    ]


def test_a_classifier_output_must_be_named_when_the_model_has_several(tmp_path):
    bundle = ssd_anchors_bundle(tmp_path / "b")
    body = json.loads((bundle / "manifest.json").read_text())
    body.update(task="classify", decoder={"type": "softmax"})
    (bundle / "manifest.json").write_text(json.dumps(body))
    (problem,) = prove(bundle)
    assert problem.field == "decoder.output" and problem.found == "none"
    assert "['loc', 'logits']" in problem.expected


def test_a_wrong_anchors_file(tmp_path):
    (problem,) = prove(ssd_anchors_bundle(tmp_path / "b", anchors=20))
    assert problem == Problem(
        "decoder.anchors_file", "16 anchors (output 'loc' has 16 boxes)", "20 in anchors.npy"
    )


def test_a_wrong_anchor_generator(tmp_path):
    generator = {**GENERATOR, "feature_map_sizes": [[GRID + 1, GRID + 1]]}
    (problem,) = prove(ssd_anchors_bundle(tmp_path / "b", generator=generator))
    assert problem.field == "decoder.anchor_generator"
    assert problem.expected.startswith("16 anchors") and problem.found == "25 from its parameters"


@pytest.mark.parametrize(
    ("make", "field", "expected", "found"),
    [
        (
            lambda out: ssd_boxes_bundle(out, labels=["red", "green", "blue", "cyan"]),
            "labels",
            "3 labels (output 'scores' has 3 score columns)",
            "4",
        ),
        (  # background column declared but there is none
            lambda out: ssd_boxes_bundle(
                out,
                decoder={
                    "type": "ssd_boxes",
                    "outputs": {"boxes": "boxes", "scores": "scores"},
                    "background_class": 0,
                },
            ),
            "decoder.background_class",
            "null (output 'scores' has 3 score columns, one per label: no background column)",
            "0",
        ),
        (  # 4 columns with the background: 3 labels, not 2
            lambda out: ssd_anchors_bundle(out, labels=["red", "green"]),
            "labels",
            "3 labels (output 'logits' has 4 score columns, one of them the background)",
            "2",
        ),
        (  # a background column the manifest forgot
            lambda out: ssd_anchors_bundle(
                out,
                decoder={
                    "type": "ssd_anchors",
                    "outputs": {"boxes": "loc", "scores": "logits"},
                    "anchors_file": "anchors.npy",
                    "background_class": None,
                },
            ),
            "decoder.background_class",
            "the index of the background column (output 'logits' has 4 score columns for 3 labels)",
            "null",
        ),
        (
            lambda out: classifier_bundle(out, labels=["red", "green", "blue", "cyan"]),
            "labels",
            "3 labels (output 'logits' has 3 scores)",
            "4",
        ),
        (
            lambda out: yolo_regions_bundle(out, labels=2),  # 5 x (5 + 2) channels
            "labels",
            "2 labels (output 'model_outputs0' has 35 channels = anchors x (5 + labels))",
            "3",
        ),
        (  # class 5 of the model has no label
            lambda out: detections_bundle(out, classes=(0, 5)),
            "labels",
            "at least 6 labels (output 'detected_classes' gives class 5, class_offset 0)",
            "3",
        ),
    ],
)
def test_a_label_count_mismatch(tmp_path, make, field, expected, found):
    assert prove(make(tmp_path / "b")) == [Problem(field, expected, found)]


def test_softmax_applied_twice(tmp_path):
    (problem,) = prove(classifier_bundle(tmp_path / "b", softmax_in_graph=True))
    assert problem.field == "decoder.from_logits"
    assert problem.expected.startswith("false (output 'logits' already sums to 1")
    assert problem.found == "true"


def test_probabilities_that_are_logits(tmp_path):
    bundle = classifier_bundle(tmp_path / "b", decoder={"type": "softmax", "from_logits": False})
    (problem,) = prove(bundle)
    assert problem.field == "decoder.from_logits" and problem.found == "false"
    assert problem.expected.startswith("true (output 'logits' is not probabilities: it sums to 0")


HEAD = {"outputs": {"boxes": "loc", "scores": "logits"}, "background_class": 0}


def test_detector_score_activation_and_box_units(tmp_path):
    boxes = {"type": "ssd_boxes", **HEAD, "score_activation": "softmax"}
    problems = prove(ssd_head_bundle(tmp_path / "a", boxes, (0, 0, 32, 32), softmax_in_graph=True))
    assert [(p.field, p.found) for p in problems] == [
        ("decoder.score_activation", "'softmax'"),  # the graph's softmax, then the agent's
        ("decoder.normalized", "true"),  # boxes in input pixels
    ]
    assert "holds 0 to 32: input pixels" in problems[1].expected
    none = {"type": "ssd_boxes", **HEAD, "score_activation": "none"}
    (problem,) = prove(ssd_head_bundle(tmp_path / "b", none, logit_bias=4.0))
    assert problem == Problem(
        "decoder.score_activation",
        "'softmax' or 'sigmoid' (output 'logits' holds 4 to 4: not probabilities, while "
        "thresholds are)",
        "'none'",
    )
    fits = {"type": "ssd_boxes", **HEAD, "score_activation": "none", "normalized": False}
    assert prove(ssd_head_bundle(tmp_path / "c", fits, (0, 0, 32, 32), softmax_in_graph=True)) == []


def test_input_range_and_colours_stated_in_the_onnx_file(tmp_path):
    metadata = {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"}
    problems = prove(classifier_bundle(tmp_path / "b", metadata=metadata))
    assert fields(problems) == ["input.color", "input.scale"]
    assert str(problems[0]) == (
        "input.color: expected BGR (the model's Image.BitmapPixelFormat is Bgr8), found RGB"
    )
    assert "giving 0 to 255" in problems[1].expected and "0 to 1" in problems[1].found
    fixed = {"input": {"width": 32, "height": 32, "color": "BGR", "scale": 1.0}}
    assert prove(classifier_bundle(tmp_path / "c", metadata=metadata, **fixed)) == []


def test_an_input_the_model_cannot_take_is_found_on_the_real_path(tmp_path):
    # LiteRT warms up with the model's own input shape; the manifest's 40 px only fail here.
    bundle = tflite_classifier_bundle(
        tmp_path / "b", input={"width": 40, "height": 40, "layout": "NHWC"}
    )
    (problem,) = prove(bundle)
    assert problem.field == "input" and "(1, 40, 40, 3) float32" in problem.expected


def test_every_problem_is_reported_at_once(tmp_path):
    decoder = {
        "type": "ssd_anchors",
        "outputs": {"boxes": "loc", "scores": "scores"},
        "anchors_file": "anchors.npy",
    }
    problems = prove(ssd_anchors_bundle(tmp_path / "b", anchors=9, decoder=decoder))
    assert fields(problems) == ["decoder.outputs.scores", "decoder.anchors_file"]


def test_tflite_label_count_mismatch(tmp_path):
    bundle = tflite_classifier_bundle(tmp_path / "b", labels=["red", "green"])
    assert fields(prove(bundle, "tflite")) == ["labels"]


# --- check-config, check-bundle, the agent --------------------------------------------------


def agent_config(tmp_path: Path, bundle: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"model:\n  bundle: {bundle}\n  threads: 1\n"
        "sources:\n  - id: cam\n    uri: rtsp://cam.local/stream\n"
        "mqtt:\n  host: 127.0.0.1\n"
    )
    return path


def test_check_config_names_the_field_and_exits_2(tmp_path, capsys):
    bundle = ssd_boxes_bundle(tmp_path / "b", labels=["red", "green", "blue", "cyan"])
    config = agent_config(tmp_path, bundle)
    assert main(["check-config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    assert f"{config}: model.bundle: bundle {bundle}: the model does not fit its manifest" in (
        captured.err
    )
    assert "  labels: expected 3 labels (output 'scores' has 3 score columns), found 4" in (
        captured.err
    )

    config = agent_config(tmp_path, ssd_boxes_bundle(tmp_path / "good"))
    assert main(["check-config", str(config)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_bundle_on_a_folder(tmp_path, capsys):
    assert main(["check-bundle", str(ssd_anchors_bundle(tmp_path / "good"))]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'good'}: OK" in out and "toy-ssd_anchors@1 (detect, 3 labels" in out

    bad = ssd_anchors_bundle(tmp_path / "bad", anchors=20)
    assert main(["check-bundle", str(bad), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "decoder.anchors_file: expected 16 anchors" in err and "found 20 in anchors.npy" in err


def test_check_bundle_on_an_archive(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGESIGHT_BUNDLE_CACHE", str(tmp_path / "cache"))
    archive = pack_bundle(classifier_bundle(tmp_path / "b"), tmp_path / "b.tar.gz")
    assert main(["check-bundle", str(archive)]) == 0
    assert f"{archive}: OK" in capsys.readouterr().out

    twice = classifier_bundle(tmp_path / "twice", softmax_in_graph=True)
    archive = pack_bundle(twice, tmp_path / "twice.tar.gz")
    assert main(["check-bundle", str(archive), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert f"bundle {archive}: the model does not fit its manifest (1 problem(s))" in err
    assert "decoder.from_logits: expected false" in err


def test_check_bundle_with_the_tflite_runtime(tmp_path, capsys):
    bundle = tflite_classifier_bundle(tmp_path / "b")
    assert main(["check-bundle", str(bundle), "--runtime", "tflite"]) == 0
    assert "runtime tflite" in capsys.readouterr().out


def test_check_bundle_on_a_missing_bundle(tmp_path, capsys):
    assert main(["check-bundle", str(tmp_path / "nothere")]) == 2
    assert "nothere" in capsys.readouterr().err


def test_the_agent_refuses_to_start_with_the_problem_named(tmp_path):
    bundle = ssd_boxes_bundle(
        tmp_path / "b",
        decoder={"type": "ssd_boxes", "outputs": {"boxes": "box", "scores": "scores"}},
    )
    cfg = AgentConfig.model_validate(
        {
            "model": {"bundle": str(bundle), "threads": 1},
            "sources": [{"id": "cam", "uri": "rtsp://cam.local/stream"}],
            "mqtt": {"host": "127.0.0.1"},
        }
    )
    opened = []
    with pytest.raises(BundleError, match=r"decoder\.outputs\.boxes: expected one of") as info:
        with Agent(cfg, publish=False, source_factory=lambda *a: opened.append(a)):
            pytest.fail("start() should have refused the bundle")
    assert "found 'box'" in str(info.value) and not opened  # refused before any source opens


def test_edge_agent_run_exits_2_on_a_model_that_does_not_fit(tmp_path, caplog):
    bundle = yolo_regions_bundle(tmp_path / "b", labels=2)
    assert main(["run", "--config", str(agent_config(tmp_path, bundle))]) == 2
    assert "labels: expected 2 labels" in caplog.text


def test_a_broken_anchors_file_is_exit_2_everywhere(tmp_path, caplog, capsys):
    bundle = ssd_anchors_bundle(tmp_path / "b")
    np.save(bundle / "anchors.npy", np.zeros((16, 3), np.float32))  # not (N, 4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    write_manifest(bundle, manifest)  # re-hash: only the content is wrong
    assert main(["run", "--config", str(agent_config(tmp_path, bundle))]) == 2
    assert "anchors.npy" in caplog.text and "Traceback" not in caplog.text
    assert main(["check-bundle", str(bundle)]) == 2
    assert "anchors.npy" in capsys.readouterr().err


def test_serve_refuses_a_model_that_does_not_fit(tmp_path, capsys):
    from edge_agent.cli.serve import serve

    bundle = yolo_regions_bundle(tmp_path / "b", labels=2)
    assert serve(bundle, "127.0.0.1", 0) == 2
    assert "labels: expected 2 labels" in capsys.readouterr().err
