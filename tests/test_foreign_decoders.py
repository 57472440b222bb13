"""Decoders for models made elsewhere: Custom Vision region grids and pre-decoded outputs."""

import numpy as np
import pytest

from edge_agent.bundle.manifest import CUSTOM_VISION_ANCHORS, Manifest
from edge_agent.decoders import DecodeError, build_decoder
from edge_agent.preprocess import Transform

LABELS = ["apple", "pear"]


def manifest_for(decoder: dict, size=(416, 416), **thresholds) -> Manifest:
    return Manifest.model_validate(
        {
            "schema": "edgesight.bundle/1",
            "name": "cv",
            "version": 1,
            "task": "detect",
            "labels": LABELS,
            "model": {"file": "model.onnx", "format": "onnx"},
            "input": {"width": size[0], "height": size[1], "color": "BGR", "scale": 1.0},
            "decoder": decoder,
            "thresholds": {"score": 0.3, "nms_iou": 0.45, **thresholds},
            "files": {"model.onnx": "0" * 64},
        }
    )


def region_grid(rows=13, cols=13, hits=()):
    """(1, A*(5+C), rows, cols) with every objectness very low except the given
    (row, col, anchor, class, objectness logit, x, y, w, h) cells."""
    a, c = len(CUSTOM_VISION_ANCHORS), len(LABELS)
    g = np.zeros((a, 5 + c, rows, cols), np.float32)
    g[:, 4] = -20.0
    for r, col, anchor, cls, obj, x, y, w, h in hits:
        g[anchor, :4, r, col] = (x, y, w, h)
        g[anchor, 4, r, col] = obj
        g[anchor, 5 + cls, r, col] = 10.0  # softmax ~1 for this class
    return g.reshape(1, a * (5 + c), rows, cols)


def test_custom_vision_regions_match_the_reference_formula():
    decode = build_decoder(manifest_for({"type": "yolo_regions"}))
    # cell (row 6, col 3), anchor 2 (3.34 x 5.47 cells), objectness logit 2, offsets 0.5
    grid = region_grid(hits=[(6, 3, 2, 1, 2.0, 0.5, 0.5, 0.0, 0.0)])
    det = decode({"model_outputs0": grid}, Transform(1.0, 1.0, 0.0, 0.0, 416, 416))
    assert det.class_id.tolist() == [1]
    score = 1 / (1 + np.exp(-2.0)) * (np.exp(10) / (np.exp(10) + 1))
    np.testing.assert_allclose(det.confidence, [score], rtol=1e-5)
    cx, cy = (0.5 + 3) / 13, (0.5 + 6) / 13  # Custom Vision does not squash x, y
    w, h = 3.34 / 13, 5.47 / 13
    expected = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 416
    np.testing.assert_allclose(det.xyxy[0], expected, rtol=1e-5)


def test_regions_channel_count_is_checked():
    decode = build_decoder(manifest_for({"type": "yolo_regions"}))
    with pytest.raises(DecodeError, match="needs 35"):
        decode({"x": np.zeros((1, 30, 13, 13), np.float32)}, Transform(1, 1, 0, 0, 416, 416))


def test_pre_decoded_custom_vision_s1_outputs():
    manifest = manifest_for(
        {
            "type": "detections",
            "outputs": {
                "boxes": "detected_boxes",
                "classes": "detected_classes",
                "scores": "detected_scores",
            },
        },
        size=(320, 320),
    )
    outputs = {
        "detected_boxes": np.array(
            [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]]], np.float32
        ),
        "detected_classes": np.array([[0, 1, 5]], np.int64),  # 5 is not a label: dropped
        "detected_scores": np.array([[0.2, 0.8, 0.9]], np.float32),
    }
    det = build_decoder(manifest)(outputs, Transform(0.5, 0.5, 0.0, 0.0, 640, 640))
    assert det.class_id.tolist() == [1]  # 0.2 is under the 0.3 threshold
    np.testing.assert_allclose(det.xyxy[0], [320, 320, 576, 576], rtol=1e-5)
