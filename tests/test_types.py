"""Core types: shape checks name expected vs got, mask indexing, Custom Vision boxes."""

import numpy as np
import pytest

from edge_agent.types import UNCONFIRMED, Classifications, Detections, Frame


def make_detections(n: int = 3, tracker: bool = False) -> Detections:
    xyxy = np.array([[10 * i, 5 * i, 10 * i + 20, 5 * i + 10] for i in range(n)], np.float32)
    return Detections(
        xyxy=xyxy.reshape(n, 4),
        confidence=np.linspace(0.9, 0.3, n, dtype=np.float32),
        class_id=np.arange(n, dtype=np.int32) % 2,
        tracker_id=np.arange(100, 100 + n) if tracker else None,
    )


def test_detections_shape_error_names_expected_and_got():
    with pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), but got shape \(3,\)"):
        Detections(np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"confidence must have shape \(2\), but got shape \(3,\)"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"class_id must be a np\.ndarray, but got list"):
        Detections(np.zeros((1, 4)), np.zeros(1), [0])


def test_detections_dtypes_are_normalised():
    d = Detections(np.zeros((2, 4), np.float64), np.ones(2), np.array([1, 2]), np.array([5, 6]))
    assert (d.xyxy.dtype, d.confidence.dtype, d.class_id.dtype) == (
        np.float32,
        np.float32,
        np.int32,
    )
    assert d.tracker_id is not None and d.tracker_id.dtype == np.int64


def test_mask_indexing_keeps_every_field_aligned():
    d = make_detections(4, tracker=True)
    kept = d[d.confidence > 0.5]
    assert len(kept) == 2
    np.testing.assert_array_equal(kept.class_id, d.class_id[:2])
    np.testing.assert_array_equal(kept.tracker_id, [100, 101])
    assert len(d[2]) == 1 and d[2].xyxy[0, 0] == 20
    with pytest.raises(ValueError, match=r"mask must have shape \(4,\)"):
        d[np.array([True, False])]


def test_empty_detections():
    e = Detections.empty()
    assert len(e) == 0 and e.xyxy.shape == (0, 4)
    assert e[e.confidence > 0.1].xyxy.shape == (0, 4)
    assert e.to_custom_vision_boxes(10, 10).shape == (0, 4)


def test_custom_vision_boxes_are_normalised_ltwh_and_clipped():
    # the conversion itself is geometry's (tests/test_geometry.py); this is the method
    boxes = np.array([[64, 48, 192, 144], [-10, -10, 700, 100]], np.float32)
    d = Detections(boxes, np.ones(2, np.float32), np.zeros(2, np.int32))
    cv = d.to_custom_vision_boxes(640, 480)
    np.testing.assert_allclose(cv[0], [0.1, 0.1, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(cv[1], [0.0, 0.0, 1.0, 100 / 480], atol=1e-6)
    with pytest.raises(ValueError, match="frame size must be positive"):
        d.to_custom_vision_boxes(0, 480)


def test_classifications_top_and_above():
    c = Classifications(np.array([0.1, 0.7, 0.2]))
    assert c.top(2) == [(1, pytest.approx(0.7)), (2, pytest.approx(0.2))]
    np.testing.assert_array_equal(c.above(0.15), [1, 2])
    np.testing.assert_array_equal(c.above(np.array([0.05, 0.8, 0.1])), [0, 2])
    with pytest.raises(ValueError, match=r"scores must have shape \(N\)"):
        Classifications(np.zeros((2, 2)))


def test_frame_checks_image():
    Frame(np.zeros((4, 6, 3), np.uint8), "cam", 0, 0.0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) BGR, but got \(4, 6\)"):
        Frame(np.zeros((4, 6), np.uint8), "cam", 0, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        Frame(np.zeros((4, 6, 3), np.float32), "cam", 0, 0.0)


def test_data_arrays_travel_with_indexing_and_must_match_the_length():
    det = Detections(
        xyxy=np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], np.float32),
        confidence=np.array([0.9, 0.8, 0.7], np.float32),
        class_id=np.array([0, 1, 0], np.int32),
        tracker_id=np.array([4, UNCONFIRMED, 6], np.int64),
        data={"zones": np.array([[True, False], [False, False], [True, True]])},
    )
    picked = det[det.confirmed()]
    assert picked.tracker_id.tolist() == [4, 6]
    assert picked.data["zones"].tolist() == [[True, False], [True, True]]
    assert det[[2]].data["zones"].tolist() == [[True, True]]
    with pytest.raises(ValueError, match=r"data\['zones'\] must be an array of length 3"):
        Detections(det.xyxy, det.confidence, det.class_id, data={"zones": np.zeros(2, bool)})


def test_untracked_detections_have_no_confirmed_box():
    det = Detections(np.zeros((2, 4), np.float32), np.ones(2, np.float32), np.zeros(2, np.int32))
    assert det.confirmed().tolist() == [False, False]
