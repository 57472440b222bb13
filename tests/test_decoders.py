"""Decoders proven on hand-built ONNX models with known outputs, through the real runtime."""

import json

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from edge_agent.bundle import load_bundle, write_manifest
from edge_agent.bundle.manifest import Manifest
from edge_agent.decoders import DecodeError, build_decoder
from edge_agent.decoders.ops import activate, candidates, nms, scored_candidates
from edge_agent.preprocess import Preprocessor, Transform
from edge_agent.runtimes import load_runtime
from edge_agent.types import Classifications, Detections
from tools.toy_models import colour_blocks_bundle, colour_matrix, mean_colour_classifier

IDENTITY = Transform(1.0, 1.0, 0.0, 0.0, 10_000, 10_000)


def classifier_bundle(path, decoder: dict, multilabel: bool = False, labels=None):
    path.mkdir()
    mean_colour_classifier(path / "m.onnx", size=32)
    write_manifest(
        path,
        {
            "schema": "edgesight.bundle/1",
            "name": "colour",
            "version": 1,
            "task": "classify",
            "multilabel": multilabel,
            "labels": labels or ["red", "green", "blue"],
            "model": {"file": "m.onnx", "format": "onnx"},
            "input": {"width": 32, "height": 32, "color": "RGB"},
            "decoder": decoder,
            "thresholds": {"score": 0.5},
            "files": {"m.onnx": ""},
        },
    )
    return load_bundle(path)


def infer(bundle, image):
    runtime = load_runtime("onnx", bundle, threads=1)
    tensor, transform = Preprocessor(bundle.manifest.input)(image)
    return build_decoder(bundle.manifest)(runtime.run(tensor), transform)


def solid(bgr, h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = bgr
    return img


def test_softmax_matches_numpy_reference(tmp_path):
    bundle = classifier_bundle(tmp_path / "b", {"type": "softmax"})
    img = solid((40, 200, 90))  # BGR
    result = infer(bundle, img)
    assert isinstance(result, Classifications) and not result.multilabel
    mean_rgb = np.array([90, 200, 40], np.float32) / 255
    logits = mean_rgb @ (colour_matrix() * 4)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)
    assert result.top(1)[0][0] == 1  # green


def test_sigmoid_multilabel(tmp_path):
    bundle = classifier_bundle(tmp_path / "b", {"type": "sigmoid"}, multilabel=True)
    result = infer(bundle, solid((0, 255, 255)))  # yellow = red + green in RGB
    mean_rgb = np.array([1.0, 1.0, 0.0], np.float32)
    expected = 1 / (1 + np.exp(-(mean_rgb @ (colour_matrix() * 4))))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)
    assert result.multilabel


def test_label_count_mismatch_is_clear(tmp_path):
    bundle = classifier_bundle(tmp_path / "b", {"type": "softmax"}, labels=["a", "b"])
    with pytest.raises(DecodeError, match="3 scores but the manifest has 2 labels"):
        infer(bundle, solid((0, 0, 0)))


def test_ssd_boxes_finds_blocks_in_frame_pixels(tmp_path):
    bundle = load_bundle(colour_blocks_bundle(tmp_path / "b"))
    img = solid((60, 60, 60), h=480, w=640)
    img[96:192, 128:256] = (0, 0, 255)  # red block = window (32, 32)-(64, 64) at 160 px
    img[288:384, 384:512] = (255, 0, 0)  # blue block = window (96, 96)-(128, 128)
    det = infer(bundle, img)
    assert isinstance(det, Detections)
    order = np.argsort(det.class_id)
    np.testing.assert_array_equal(det.class_id[order], [0, 2])
    np.testing.assert_allclose(det.xyxy[order], [[128, 96, 256, 192], [384, 288, 512, 384]])
    np.testing.assert_allclose(det.confidence, [1.0, 1.0], atol=1e-5)


def test_letterbox_boxes_map_back_to_the_frame(tmp_path):
    path = colour_blocks_bundle(tmp_path / "b")
    data = json.loads((path / "manifest.json").read_text())
    data["input"]["resize"] = "letterbox"
    (path / "manifest.json").write_text(json.dumps(data))
    bundle = load_bundle(path)
    img = solid((60, 60, 60), h=320, w=640)  # scale 0.25, pad 40 px top and bottom at 160
    img[64:192, 128:256] = (0, 255, 0)  # -> (32, 56)-(64, 88) at 160: windows are 16 px apart
    det = infer(bundle, img)
    assert det.class_id.tolist() == [1]
    # The best window (32, 48)-(64, 80) holds 3/4 of the block: its box maps back to frame px.
    np.testing.assert_allclose(det.xyxy[0], [128, 32, 256, 160])
    np.testing.assert_allclose(det.confidence[0], 0.75 - 0.25 * 60 / 255, atol=1e-5)


def select_and_nms(xyxy, scores, thresholds, iou, max_det):
    anchor, cls, conf = candidates(scores, thresholds)
    return nms(xyxy[anchor], conf, cls, iou, max_det)


def test_select_and_nms_is_class_wise_and_bounded():
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0]], np.float32)
    _, conf, cls = select_and_nms(xyxy, scores, np.array([0.5, 0.5]), 0.5, 10)
    # box 1 is suppressed by box 0 (same class); box 2 overlaps box 0 but is another class
    np.testing.assert_allclose(conf, [0.9, 0.7, 0.6])
    assert cls.tolist() == [0, 1, 0]
    _, conf2, _ = select_and_nms(xyxy, scores, np.array([0.5, 0.5]), 0.5, 2)
    assert len(conf2) == 2
    _, conf3, _ = select_and_nms(xyxy, scores, np.array([0.95, 0.5]), 0.5, 10)
    assert conf3.tolist() == pytest.approx([0.7])


def test_ssd_boxes_formats_background_and_per_class_thresholds():
    manifest = Manifest.model_validate(
        {
            "schema": "edgesight.bundle/1",
            "name": "t",
            "version": 1,
            "task": "detect",
            "labels": ["cat", "dog"],
            "model": {"file": "m.onnx", "format": "onnx"},
            "input": {"width": 100, "height": 50},
            "decoder": {
                "type": "ssd_boxes",
                "outputs": {"boxes": "b", "scores": "s"},
                "box_format": "yxyx",
                "normalized": True,
                "score_activation": "softmax",
                "background_class": 0,
            },
            "thresholds": {"score": 0.5, "per_class": {"dog": 0.9}},
            "files": {"m.onnx": "0" * 64},
        }
    )
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]], np.float32)
    logits = np.log(np.array([[[0.2, 0.7, 0.1], [0.15, 0.05, 0.8]]], np.float32))
    det = build_decoder(manifest)({"b": boxes, "s": logits}, IDENTITY)
    # only the cat passes: the dog's 0.8 is below its own 0.9 threshold
    assert det.class_id.tolist() == [0]
    np.testing.assert_allclose(det.xyxy[0], [20, 5, 60, 25], atol=1e-4)
    np.testing.assert_allclose(det.confidence, [0.7], atol=1e-5)
    with pytest.raises(DecodeError, match="output 'b' not found"):
        build_decoder(manifest)({"boxes": boxes, "s": logits}, IDENTITY)


THRESHOLDS = st.one_of(
    st.sampled_from([0.0, 1e-9, 0.05, 0.3, 0.5, 0.9, 0.9999, 0.999999, 1.0]),
    st.floats(0.0, 1.0, allow_subnormal=False),
)


@settings(max_examples=500, deadline=None)
@given(
    logits=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 60), st.integers(2, 6)),
        elements=st.floats(-40, 40, width=32, allow_subnormal=False),
    ),
    activation=st.sampled_from(["sigmoid", "softmax", "none"]),
    background=st.sampled_from([None, 0, -1, 1]),
    data=st.data(),
)
def test_logit_prefilter_finds_exactly_what_activating_everything_finds(
    logits, activation, background, data
):
    n_labels = logits.shape[1] - (background is not None)
    thresholds = np.asarray(
        data.draw(st.lists(THRESHOLDS, min_size=n_labels, max_size=n_labels)), np.float32
    )
    full = candidates(activate(logits, activation, background), thresholds)
    fast = scored_candidates(logits, activation, background, thresholds)
    for want, got in zip(full, fast, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_prefilter_keeps_saturated_scores_at_a_threshold_of_one(activation):
    # found by CI: softmax([7, -10]) is exactly 1.0 in float32, so it passes a threshold of 1.0
    logits = np.array([[7.0, -10.0], [30.0, -10.0]], np.float32)
    thresholds = np.array([1.0], np.float32)
    background = -1 if activation == "softmax" else None
    if background is None:
        logits = logits[:, :1]
    full = candidates(activate(logits, activation, background), thresholds)
    fast = scored_candidates(logits, activation, background, thresholds)
    assert full[0].tolist() == fast[0].tolist() and len(full[0]) >= 1


def test_prefilter_keeps_a_score_exactly_at_its_threshold():
    logits = np.array([[0.0, -3.0], [0.0, 0.0]], np.float32)  # sigmoid(0) = 0.5; softmax 0.5
    anchor, cls, conf = scored_candidates(logits, "sigmoid", None, np.array([0.5, 0.99]))
    assert anchor.tolist() == [0, 1] and cls.tolist() == [0, 0]
    anchor, cls, conf = scored_candidates(logits, "softmax", 1, np.array([0.5], np.float32))
    assert anchor.tolist() == [0, 1] and conf[1] == 0.5


def test_every_manifest_decoder_type_has_a_builder():
    from typing import get_args

    from edge_agent.bundle.manifest import Decoder
    from edge_agent.decoders import DECODERS

    union = get_args(Decoder)[0]
    types = {get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(union)}
    assert types == set(DECODERS)
