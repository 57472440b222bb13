"""geometry: box conversions, IoU, anchor points, point-in-polygon and side of a segment."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.geometry import (
    ANCHOR_FRACTIONS,
    anchor_points,
    box_area,
    box_iou,
    boxes_to_xyxy,
    cxcywh_to_xyxy,
    points_in_polygon,
    side_of_segment,
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


# --- box_iou ------------------------------------------------------------------------------


def test_iou_against_hand_computed_values():
    a = boxes([0, 0, 10, 10])
    b = boxes(
        [5, 5, 15, 15],  # overlap 5 x 5 = 25, union 100 + 100 - 25 = 175
        [0, 0, 10, 20],  # overlap 100, union 200
        [2, 2, 8, 8],  # inside: 36 / 100
        [10, 0, 20, 10],  # touching along an edge: no area in common
        [20, 20, 30, 30],  # disjoint
        [0, 0, 10, 10],  # identical
    )
    iou = box_iou(a, b)
    assert iou.shape == (1, 6) and iou.dtype == np.float64
    np.testing.assert_allclose(iou[0], [25 / 175, 0.5, 0.36, 0.0, 0.0, 1.0])


def test_iou_is_a_matrix_and_symmetric():
    rng = np.random.default_rng(1)
    a = xywh_to_xyxy(rng.uniform(0, 100, (7, 4)))
    b = xywh_to_xyxy(rng.uniform(0, 100, (5, 4)))
    iou = box_iou(a, b)
    assert iou.shape == (7, 5)
    np.testing.assert_allclose(iou, box_iou(b, a).T)
    assert ((iou >= 0) & (iou <= 1)).all()
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0)


def test_iou_with_no_boxes_on_either_side():
    assert box_iou(boxes(), boxes([0, 0, 1, 1], [1, 1, 2, 2])).shape == (0, 2)
    assert box_iou(boxes([0, 0, 1, 1]), boxes()).shape == (1, 0)


def test_zero_area_boxes_give_zero_not_nan():
    point = boxes([5, 5, 5, 5])
    line = boxes([0, 5, 10, 5])
    inverted = boxes([10, 10, 0, 0])  # x2 < x1: treated as empty, not as a negative area
    real = boxes([0, 0, 10, 10])
    with np.errstate(all="raise"):  # no division by zero, no invalid value
        iou = box_iou(np.concatenate([point, line, inverted]), np.concatenate([point, real]))
    np.testing.assert_array_equal(iou, np.zeros((3, 2)))
    np.testing.assert_array_equal(box_area(np.concatenate([point, line, inverted])), [0, 0, 0])


def test_iou_names_a_wrong_shape():
    with pytest.raises(ValueError, match=r"a must have shape \(N, 4\), but got shape \(4,\)"):
        box_iou(np.zeros(4), boxes())


# --- anchor_points ------------------------------------------------------------------------


def test_anchor_points_default_to_the_bottom_centre():
    xyxy = boxes([10, 20, 30, 60], [0, 0, 4, 2])
    np.testing.assert_array_equal(anchor_points(xyxy), [[20, 60], [2, 2]])


@pytest.mark.parametrize(
    ("anchor", "point"),
    [
        ("center", (20, 40)),
        ("center_left", (10, 40)),
        ("center_right", (30, 40)),
        ("top_center", (20, 20)),
        ("top_left", (10, 20)),
        ("top_right", (30, 20)),
        ("bottom_center", (20, 60)),
        ("bottom_left", (10, 60)),
        ("bottom_right", (30, 60)),
    ],
)
def test_every_anchor(anchor, point):
    np.testing.assert_array_equal(anchor_points(boxes([10, 20, 30, 60]), anchor), [point])


def test_anchor_list_is_complete_and_an_unknown_one_is_named():
    assert len(ANCHOR_FRACTIONS) == 9
    assert anchor_points(boxes(), "center").shape == (0, 2)
    with pytest.raises(ValueError, match=r"anchor must be one of center, .*, got 'bottom'"):
        anchor_points(boxes([0, 0, 1, 1]), "bottom")


# --- points_in_polygon ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "inside", "why"),
    [
        ((5, 20), True, "left arm"),
        ((25, 20), True, "right arm"),
        ((15, 5), True, "base"),
        ((15, 20), False, "in the notch: inside the bounding box, outside the U"),
        ((15, 30), False, "the notch's open end"),
        ((40, 5), False, "right of everything"),
        ((5, 10), True, "a ray through the notch's corner vertices"),
        ((-5, 10), False, "a ray through vertices from outside"),
        ((5, 30), True, "on the bottom edge of the left arm"),
        ((10, 20), True, "on the notch's left edge"),
        ((15, 10), True, "on the notch's top edge"),
        ((30, 15), True, "on the right edge"),
        ((20, 10), True, "on a concave vertex"),
        ((0, 0), True, "on a convex vertex"),
        ((30 + 1e-6, 15), False, "a micro-pixel outside the right edge"),
        ((30 - 1e-6, 15), True, "a micro-pixel inside the right edge"),
    ],
)
def test_point_in_a_concave_polygon(point, inside, why):
    assert points_in_polygon(np.array([point], np.float64), U_SHAPE).tolist() == [inside], why


def reference(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """OpenCV's answer, one point at a time: +1 inside, 0 on the boundary, -1 outside."""
    contour = polygon.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) for x, y in points])


@pytest.mark.parametrize("polygon", [U_SHAPE, np.round(STAR)], ids=["U", "star"])
def test_points_in_polygon_agrees_with_opencv_on_a_grid(polygon):
    # Every half pixel, so many points fall exactly on edges and vertices.
    axis = np.arange(-2, 101, 0.5)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    np.testing.assert_array_equal(points_in_polygon(grid, polygon), reference(grid, polygon) >= 0)


def test_a_repeated_closing_vertex_changes_nothing():
    closed = np.concatenate([U_SHAPE, U_SHAPE[:1]])
    grid = np.stack(np.meshgrid(np.arange(-2, 33), np.arange(-2, 33)), axis=-1).reshape(-1, 2)
    np.testing.assert_array_equal(points_in_polygon(grid, closed), points_in_polygon(grid, U_SHAPE))
    assert not points_in_polygon(np.array([[100.0, 100.0]]), closed)[0]


def test_points_in_polygon_shapes():
    assert points_in_polygon(np.zeros((0, 2)), U_SHAPE).shape == (0,)
    with pytest.raises(ValueError, match="at least 3 vertices, but got 2"):
        points_in_polygon(np.zeros((1, 2)), U_SHAPE[:2])
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\), but got shape \(2,\)"):
        points_in_polygon(np.zeros(2), U_SHAPE)


# --- side_of_segment ------------------------------------------------------------------------


def test_side_of_segment_signs():
    a, b = np.array([0, 0]), np.array([10, 0])
    points = np.array([[5, 3], [5, -3], [5, 0], [20, 0], [-7, 0]], np.float64)
    np.testing.assert_array_equal(side_of_segment(points, a, b), [30, -30, 0, 0, 0])
    np.testing.assert_array_equal(side_of_segment(points, b, a), [-30, 30, 0, 0, 0])


def test_side_of_segment_magnitude_is_distance_times_length():
    a, b = np.array([1.0, 1.0]), np.array([4.0, 5.0])  # length 5
    point = np.array([[1.0, 1.0]]) + 2 * np.array([[0.8, -0.6]])  # 2 px off, perpendicular
    assert abs(side_of_segment(point, a, b)[0]) == pytest.approx(10)


def test_a_point_on_a_long_diagonal_is_exactly_on_it():
    a, b = np.array([1000.5, 2000.25]), np.array([3000.5, 4000.25])
    assert side_of_segment(np.array([[2000.5, 3000.25]]), a, b)[0] == 0.0


def test_the_sign_changes_when_a_track_crosses_the_line():
    a, b = np.array([100.0, 0.0]), np.array([100.0, 480.0])  # a vertical line, drawn downwards
    track = np.array([[80.0, 200.0], [95.0, 210.0], [105.0, 220.0], [120.0, 230.0]])
    signs = np.sign(side_of_segment(track, a, b))
    assert signs.tolist() == [1.0, 1.0, -1.0, -1.0]


def test_side_of_segment_names_a_wrong_shape():
    with pytest.raises(ValueError, match=r"a and b must be points of shape \(2,\)"):
        side_of_segment(np.zeros((1, 2)), np.zeros(3), np.zeros(2))
