"""SSD anchors from the TF Object Detection API generator parameters, and the other
foreign-model decoder (tflite_detection_postprocess), on golden values."""

import numpy as np
import pytest

from edge_agent.bundle.manifest import AnchorGenerator, BoxCoder, Manifest
from edge_agent.decoders import build_decoder
from edge_agent.decoders.anchors import generate_ssd_anchors
from edge_agent.decoders.ssd import decode_boxes
from edge_agent.preprocess import Transform

# ssd_mobilenet_v1_coco (TF model zoo): 300x300, six layers of 19, 10, 5, 3, 2, 1 cells.
TF_SSD_V1 = {
    "num_layers": 6,
    "min_scale": 0.2,
    "max_scale": 0.95,
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
    "feature_map_sizes": [[19, 19], [10, 10], [5, 5], [3, 3], [2, 2], [1, 1]],
}


def test_tf_ssd_mobilenet_v1_anchors():
    anchors = generate_ssd_anchors(AnchorGenerator.model_validate(TF_SSD_V1), 300, 300)
    assert anchors.shape == (1917, 4)  # the zoo model's well-known anchor count
    np.testing.assert_allclose(anchors[0], [0.5 / 19, 0.5 / 19, 0.1, 0.1], rtol=1e-6)
    s2 = np.sqrt(2)
    np.testing.assert_allclose(anchors[1], [0.5 / 19, 0.5 / 19, 0.2 * s2, 0.2 / s2], rtol=1e-6)
    # second cell of the first row: x moves, y does not
    np.testing.assert_allclose(anchors[3][:2], [1.5 / 19, 0.5 / 19], rtol=1e-6)
    # the last anchor: 1x1 map, interpolated scale sqrt(0.95 * 1.0), aspect 1
    last = np.sqrt(0.95)
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, last, last], rtol=1e-6)
    # layer 1 starts after 19*19*3 anchors with scale 0.35 and aspect 1
    np.testing.assert_allclose(anchors[1083], [0.05, 0.05, 0.35, 0.35], rtol=1e-5)


def test_strides_give_map_sizes_like_mediapipe():
    gen = AnchorGenerator.model_validate(
        {**TF_SSD_V1, "feature_map_sizes": None, "feature_map_strides": [16, 32, 64, 128, 256, 512]}
    )
    anchors = generate_ssd_anchors(gen, 300, 300)  # ceil(300 / 16) = 19, ... as above
    assert anchors.shape == (1917, 4)


def test_generator_validation_is_clear():
    with pytest.raises(ValueError, match="num_layers is 6 but 2 feature maps"):
        AnchorGenerator.model_validate({**TF_SSD_V1, "feature_map_sizes": [[2, 2], [1, 1]]})
    with pytest.raises(ValueError, match="feature_map_sizes or feature_map_strides"):
        AnchorGenerator.model_validate({**TF_SSD_V1, "feature_map_sizes": None})


def test_tf_box_coder_order():
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)  # cx, cy, w, h
    # TF order ty, tx, th, tw with scales 10, 10, 5, 5: move y by 0.1 * h, double the width
    codes = np.array([[1.0, 0.0, 0.0, 5 * np.log(2)]], np.float32)
    boxes = decode_boxes(codes, anchors, BoxCoder(order="yxhw"))
    np.testing.assert_allclose(boxes, [[0.3, 0.34, 0.7, 0.74]], atol=1e-6)


def manifest_for(decoder: dict, labels=("person", "dog", "cat"), **thresholds) -> Manifest:
    return Manifest.model_validate(
        {
            "schema": "edgesight.bundle/1",
            "name": "t",
            "version": 1,
            "task": "detect",
            "labels": list(labels),
            "model": {"file": "m.tflite", "format": "tflite"},
            "input": {"width": 300, "height": 300, "layout": "NHWC", "dtype": "uint8"},
            "decoder": decoder,
            "thresholds": {"score": 0.5, **thresholds},
            "files": {"m.tflite": "0" * 64},
        }
    )


def test_ssd_anchors_with_generator_and_sigmoid_scores():
    manifest = manifest_for(
        {
            "type": "ssd_anchors",
            "outputs": {"boxes": "raw_boxes", "scores": "raw_scores"},
            "anchor_generator": TF_SSD_V1,
            "box_coder": {"order": "yxhw"},
            "score_activation": "sigmoid",
            "background_class": 0,
        }
    )
    codes = np.zeros((1, 1917, 4), np.float32)
    logits = np.full((1, 1917, 4), -10.0, np.float32)
    logits[0, 1916, 2] = 3.0  # "dog" on the last (centre, 0.975-wide) anchor
    det = build_decoder(manifest)(
        {"raw_boxes": codes, "raw_scores": logits}, Transform(0.5, 0.5, 0.0, 0.0, 600, 600)
    )
    assert det.class_id.tolist() == [1]
    half = np.sqrt(0.95) / 2
    np.testing.assert_allclose(
        det.xyxy[0], np.array([0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half]) * 600, rtol=1e-5
    )
    np.testing.assert_allclose(det.confidence, [1 / (1 + np.exp(-3.0))], rtol=1e-6)


def test_tflite_detection_postprocess_outputs():
    manifest = manifest_for(
        {
            "type": "tflite_detection_postprocess",
            "outputs": {
                "boxes": "TFLite_Detection_PostProcess",
                "classes": "TFLite_Detection_PostProcess:1",
                "scores": "TFLite_Detection_PostProcess:2",
                "count": "TFLite_Detection_PostProcess:3",
            },
        },
        per_class={"cat": 0.8},
    )
    outputs = {
        "TFLite_Detection_PostProcess": np.array(
            [
                [
                    [0.1, 0.2, 0.5, 0.6],
                    [0.0, 0.0, 1.0, 1.0],
                    [0.2, 0.2, 0.4, 0.4],
                    [0.0, 0.0, 0.0, 0.0],
                ]
            ],
            np.float32,
        ),
        "TFLite_Detection_PostProcess:1": np.array([[2.0, 0.0, 2.0, 1.0]], np.float32),
        "TFLite_Detection_PostProcess:2": np.array([[0.9, 0.6, 0.7, 0.95]], np.float32),
        "TFLite_Detection_PostProcess:3": np.array([3.0], np.float32),  # the 4th is padding
    }
    # letterboxed 600x300 frame: scale 0.5, 75 px of padding above and below
    det = build_decoder(manifest)(outputs, Transform(0.5, 0.5, 0.0, 75.0, 600, 300))
    assert det.class_id.tolist() == [2, 0]  # the second cat (0.7) is under its 0.8 threshold
    np.testing.assert_allclose(det.confidence, [0.9, 0.6])
    # y: (30 - 75) / 0.5 is in the padding, so it is clipped to the frame
    np.testing.assert_allclose(det.xyxy[0], [120, 0, 360, 150], atol=1e-4)
