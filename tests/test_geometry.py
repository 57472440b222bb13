"""geometry: box conversions, IoU, anchor points, point-in-polygon and side of a segment."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.geometry import (
    boxes_to_xyxy,
    cxcywh_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_custom_vision,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

#: A "U" in image coordinates (y down): a base 0..10 high, two arms up to y = 30, and the
#: notch x 10..20, y 10..30 outside it.
U_SHAPE = np.array(
    [[0, 0], [30, 0], [30, 30], [20, 30], [20, 10], [10, 10], [10, 30], [0, 30]], np.float64
)
#: A five-pointed star drawn without self-intersections: ten vertices, five concave corners.
STAR = np.array(
    [
        (50 + r * np.sin(k * np.pi / 5), 50 - r * np.cos(k * np.pi / 5))
        for k, r in zip(range(10), [40, 16] * 5, strict=True)
    ]
)


def boxes(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 4)


# --- conversions ----------------------------------------------------------------------------


def test_box_form_conversions():
    np.testing.assert_array_equal(xywh_to_xyxy(np.array([[1, 2, 3, 4]])), [[1, 2, 4, 6]])
    np.testing.assert_array_equal(cxcywh_to_xyxy(np.array([[5, 5, 4, 2]])), [[3, 4, 7, 6]])
    np.testing.assert_array_equal(xyxy_to_xywh(boxes([1, 2, 4, 6])), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(xyxy_to_cxcywh(boxes([3, 4, 7, 6])), [[5, 5, 4, 2]])


def test_conversions_round_trip_in_float32():
    rng = np.random.default_rng(0)
    xyxy = np.sort(rng.uniform(0, 640, (50, 2, 2)), axis=1).transpose(0, 2, 1).reshape(50, 4)
    for there, back in ((xyxy_to_xywh, xywh_to_xyxy), (xyxy_to_cxcywh, cxcywh_to_xyxy)):
        out = back(there(xyxy))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, xyxy, atol=1e-3)


@pytest.mark.parametrize(
    ("box_format", "raw"),
    [
        ("xyxy", [10, 20, 30, 60]),
        ("yxyx", [20, 10, 60, 30]),
        ("xywh", [10, 20, 20, 40]),
        ("cxcywh", [20, 40, 20, 40]),
    ],
)
def test_boxes_to_xyxy_reads_every_layout(box_format, raw):
    out = boxes_to_xyxy(np.array([raw], np.float64), box_format)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[10, 20, 30, 60]])


def test_unknown_box_format_lists_the_choices():
    with pytest.raises(ValueError, match=r"one of xyxy, yxyx, xywh, cxcywh, got 'xxyy'"):
        boxes_to_xyxy(boxes([0, 0, 1, 1]), "xxyy")


def test_custom_vision_boxes_are_normalised_ltwh_and_clipped():
    xyxy = boxes([64, 48, 192, 144], [-10, -10, 700, 100])
    cv = xyxy_to_custom_vision(xyxy, 640, 480)
    np.testing.assert_allclose(cv[0], [0.1, 0.1, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(cv[1], [0.0, 0.0, 1.0, 100 / 480], atol=1e-6)
    with pytest.raises(ValueError, match="frame size must be positive"):
        xyxy_to_custom_vision(xyxy, 0, 480)
