"""The MQTT payloads and the Custom Vision prediction shape shared with serve (no broker)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.publish.payloads import (
    CUSTOM_VISION_SHAPE,
    CUSTOM_VISION_THRESHOLDS_SHAPE,
    RESULT_SCHEMA,
    RESULT_SHAPE,
    count_payload,
    custom_vision_predictions,
    encode,
    passes_thresholds,
    result_payload,
    status_payload,
)
from edge_agent.types import UNCONFIRMED, Classifications, Detections, Result

LABELS = ["cola", "water", "chips"]


def make_detections(
    xyxy: list[list[float]],
    confidence: list[float] | None = None,
    class_id: list[int] | None = None,
    tracker_id: list[int] | None = None,
) -> Detections:
    n = len(xyxy)
    return Detections(
        xyxy=np.array(xyxy, np.float32).reshape(n, 4),
        confidence=np.array(confidence or [0.9] * n, np.float32),
        class_id=np.array(class_id or [0] * n, np.int32),
        tracker_id=None if tracker_id is None else np.array(tracker_id, np.int64),
    )


def make_result(
    predictions: Detections | Classifications,
    frame_size: tuple[int, int] = (640, 480),
    labels: list[str] | None = None,
    **overrides: object,
) -> Result:
    fields: dict[str, object] = {
        "source_id": "cam1",
        "seq": 42,
        "ts": 1_790_000_000.123456,
        "model": "shelf-items@7",
        "task": "detect" if isinstance(predictions, Detections) else "classify",
        "labels": LABELS if labels is None else labels,
        "frame_size": frame_size,
        "predictions": predictions,
        "counts": {"cola": 1},
        "timing_ms": {"preprocess": 0.51234, "inference": 7.25},
        "origin": "rtsp://cam1/stream",
    }
    fields.update(overrides)
    return Result(**fields)  # type: ignore[arg-type]


# -- status and counts -------------------------------------------------------------------------


def test_status_payload() -> None:
    totals = {"results": 7, "frame_errors": 1}
    model = {"name": "m", "version": 3}
    payload = status_payload("degraded", 12.5, "0.1.0", model, ["cam1"], totals)
    assert payload == {
        "state": "degraded",
        "ts": 12.5,
        "agent_version": "0.1.0",
        "model": {"name": "m", "version": 3},
        "sources": ["cam1"],
        "totals": {"results": 7, "frame_errors": 1},
    }
    assert status_payload("online", 1.0, "0.1.0", None, [])["totals"] == {}


def test_status_payload_refuses_unknown_state() -> None:
    with pytest.raises(ValueError, match=r"one of \['online', 'offline', 'degraded'\].*'away'"):
        status_payload("away", 0.0, "0.1.0", None, [])


def test_count_payload() -> None:
    assert count_payload(np.int64(3), 5) == {"count": 3, "ts": 5.0}  # type: ignore[arg-type]
    assert type(count_payload(np.int64(3), 5)["count"]) is int  # type: ignore[arg-type]


# -- result: detections ------------------------------------------------------------------------


def test_detection_box_is_normalised_custom_vision_shape() -> None:
    # x 64..320 of 640, y 48..288 of 480 -> left .1, top .1, width .4, height .5
    det = make_detections([[64, 48, 320, 288]], confidence=[0.876543], class_id=[2])
    payload = result_payload(make_result(det, frame_size=(640, 480)), "dev1")
    (pred,) = payload["predictions"]
    assert pred == {
        "tagId": 2,
        "tagName": "chips",
        "probability": 0.8765,
        "boundingBox": {"left": 0.1, "top": 0.1, "width": 0.4, "height": 0.5},
    }
    assert "trackId" not in pred


def test_detection_box_is_clipped_to_the_frame_and_rounded() -> None:
    det = make_detections([[-10, 100, 700, 101]])
    box = result_payload(make_result(det, frame_size=(640, 480)), "dev1")["predictions"][0][
        "boundingBox"
    ]
    assert box == {"left": 0.0, "top": 0.20833, "width": 1.0, "height": 0.00208}


def test_track_id_only_when_tracked() -> None:
    tracked = make_detections([[0, 0, 10, 10], [5, 5, 20, 20]], tracker_id=[7, 9])
    preds = result_payload(make_result(tracked), "dev1")["predictions"]
    assert [p["trackId"] for p in preds] == [7, 9]
    assert all(type(p["trackId"]) is int for p in preds)
    untracked = make_detections([[0, 0, 10, 10]])
    assert "trackId" not in result_payload(make_result(untracked), "dev1")["predictions"][0]
    # A box no confirmed track holds yet has no trackId: -1 is not an object's id.
    partly = make_detections([[0, 0, 10, 10], [5, 5, 20, 20]], tracker_id=[UNCONFIRMED, 9])
    preds = result_payload(make_result(partly), "dev1")["predictions"]
    assert ["trackId" in p for p in preds] == [False, True]


def test_result_envelope() -> None:
    payload = result_payload(make_result(make_detections([[0, 0, 10, 10]])), "dev1")
    assert list(payload) == [
        "schema", "id", "device", "source", "seq", "ts", "origin", "model", "task",
        "inferred", "width", "height", "predictions", "counts", "timing_ms",
    ]  # fmt: skip
    assert payload["inferred"] is True
    assert payload["schema"] == RESULT_SCHEMA == "edgesight.result/1"
    assert payload["id"] == "dev1/cam1/42/1790000000123"
    assert payload["device"] == "dev1"
    assert payload["source"] == "cam1"
    assert payload["seq"] == 42
    assert payload["ts"] == pytest.approx(1_790_000_000.123456)
    assert isinstance(payload["ts"], float)
    assert (payload["width"], payload["height"]) == (640, 480)
    assert payload["counts"] == {"cola": 1}
    assert payload["timing_ms"] == {"preprocess": 0.512, "inference": 7.25}
    assert payload["origin"] == "rtsp://cam1/stream"
    assert (payload["model"], payload["task"]) == ("shelf-items@7", "detect")


def test_result_id_is_stable_for_the_same_frame() -> None:
    det = make_detections([[0, 0, 10, 10]])
    assert (
        result_payload(make_result(det), "dev1")["id"]
        == (result_payload(make_result(det, counts={"water": 3}), "dev1")["id"])
    )


def test_empty_detections() -> None:
    assert result_payload(make_result(Detections.empty()), "dev1")["predictions"] == []


@pytest.mark.parametrize("bad", [3, -1])
def test_class_id_outside_labels_is_named(bad: int) -> None:
    det = make_detections([[0, 0, 10, 10]], class_id=[bad])
    with pytest.raises(ValueError, match=rf"class_id {bad} is outside the 3 labels"):
        result_payload(make_result(det), "dev1")


# -- result: classifications -------------------------------------------------------------------


def test_classification_top5_best_first_without_boxes() -> None:
    labels = [f"c{i}" for i in range(7)]
    scores = np.array([0.01, 0.3, 0.05, 0.2, 0.25, 0.04, 0.15], np.float32)
    payload = result_payload(make_result(Classifications(scores), labels=labels), "dev1")
    preds = payload["predictions"]
    assert [p["tagName"] for p in preds] == ["c1", "c4", "c3", "c6", "c2"]
    assert [p["tagId"] for p in preds] == [1, 4, 3, 6, 2]
    assert preds[0] == {"tagId": 1, "tagName": "c1", "probability": 0.3}
    assert all("boundingBox" not in p and "trackId" not in p for p in preds)
    assert payload["task"] == "classify"


def test_classification_with_fewer_than_five_classes() -> None:
    scores = np.array([0.2, 0.8], np.float32)
    preds = result_payload(make_result(Classifications(scores), labels=["a", "b"]), "d")[
        "predictions"
    ]
    assert [p["tagName"] for p in preds] == ["b", "a"]


def test_classification_score_without_label_is_named() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.9], np.float32)
    with pytest.raises(ValueError, match="class_id 3 is outside the 3 labels"):
        result_payload(make_result(Classifications(scores)), "dev1")


# -- encoding ----------------------------------------------------------------------------------


def test_encode_is_compact_utf8_json() -> None:
    data = encode({"tagName": "Ölflasche", "n": [1, 2.5]})
    assert data == '{"tagName":"Ölflasche","n":[1,2.5]}'.encode()
    assert json.loads(data) == {"tagName": "Ölflasche", "n": [1, 2.5]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_refuses_nan_and_infinity(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        encode({"ts": bad})


def test_nan_confidence_in_a_result_is_refused() -> None:
    det = make_detections([[0, 0, 10, 10]], confidence=[math.nan])
    with pytest.raises(ValueError, match="NaN"):
        encode(result_payload(make_result(det), "dev1"))


# Subnormals are off: a library loaded earlier in the run (LiteRT/JAX, built with fast-math)
# can flush them to zero process-wide, which hypothesis refuses to generate under.
@given(
    st.lists(
        st.tuples(
            st.floats(-100, 800, allow_nan=False, allow_subnormal=False, width=32),
            st.floats(-100, 600, allow_nan=False, allow_subnormal=False, width=32),
            st.floats(0, 900, allow_nan=False, allow_subnormal=False, width=32),
            st.floats(0, 700, allow_nan=False, allow_subnormal=False, width=32),
        ),
        max_size=5,
    )
)
def test_boxes_always_inside_unit_square(boxes: list[tuple[float, float, float, float]]) -> None:
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    det = make_detections(xyxy) if xyxy else Detections.empty()
    payload = result_payload(make_result(det, frame_size=(640, 480)), "dev1")
    for pred in payload["predictions"]:
        box = pred["boundingBox"]
        assert 0.0 <= box["left"] <= 1.0 and 0.0 <= box["top"] <= 1.0
        assert 0.0 <= box["left"] + box["width"] <= 1.00001
        assert 0.0 <= box["top"] + box["height"] <= 1.00001
    json.loads(encode(payload))


# -- the Custom Vision shape shared with serve ---------------------------------------------------


def test_custom_vision_shape_lists_boxes_best_first_with_8_decimals_and_no_track_id() -> None:
    det = make_detections(
        [[0, 0, 10, 10], [10, 10, 20, 30], [1, 2, 3, 4]],
        confidence=[0.6, 0.987654321, 0.6],
        class_id=[1, 0, 2],
        tracker_id=[4, 5, 6],
    )
    preds = custom_vision_predictions(det, LABELS, 300, 70, CUSTOM_VISION_SHAPE)
    assert [p["tagName"] for p in preds] == ["cola", "water", "chips"]  # ties keep their order
    best = preds[0]
    assert (best["tagId"], best["probability"]) == (0, 0.98765433)  # float32, then 8 decimals
    box = best["boundingBox"]
    assert box == pytest.approx({"left": 1 / 30, "top": 1 / 7, "width": 1 / 30, "height": 2 / 7})
    assert all(round(v, 8) == v and round(v, 7) != v for v in box.values())
    assert all("trackId" not in p for p in preds)


def test_result_shape_keeps_the_decoder_order_with_fewer_decimals() -> None:
    det = make_detections([[0, 0, 10, 10], [10, 10, 20, 30]], confidence=[0.6, 0.987654321])
    preds = custom_vision_predictions(det, LABELS, 300, 70, RESULT_SHAPE)
    assert [p["probability"] for p in preds] == [0.6, 0.9877]
    assert preds[0]["boundingBox"] == {"left": 0.0, "top": 0.0, "width": 0.03333, "height": 0.14286}


def test_custom_vision_shape_lists_every_class_best_first() -> None:
    labels = [f"c{i}" for i in range(7)]
    scores = np.array([0.01, 0.3, 0.05, 0.2, 0.25, 0.04, 0.15], np.float32)
    preds = custom_vision_predictions(Classifications(scores), labels, 1, 1, CUSTOM_VISION_SHAPE)
    assert [p["tagId"] for p in preds] == [1, 4, 3, 6, 2, 5, 0]
    assert preds[0] == {"tagId": 1, "tagName": "c1", "probability": 0.30000001}
    top5 = custom_vision_predictions(Classifications(scores), labels, 1, 1, RESULT_SHAPE)
    assert [p["tagId"] for p in top5] == [1, 4, 3, 6, 2]


def test_shape_names_the_model_only_when_given() -> None:
    det = make_detections([[0, 0, 10, 10]], class_id=[5])
    with pytest.raises(ValueError, match=r"outside the 3 labels \(expected 0\.\.2\)"):
        custom_vision_predictions(det, LABELS, 10, 10, CUSTOM_VISION_SHAPE)
    with pytest.raises(ValueError, match="labels of model 'm@1'"):
        custom_vision_predictions(det, LABELS, 10, 10, CUSTOM_VISION_SHAPE, model="m@1")


def test_other_predictions_are_refused() -> None:
    with pytest.raises(ValueError, match="Detections or Classifications, but got list"):
        custom_vision_predictions([], LABELS, 10, 10, RESULT_SHAPE)  # type: ignore[arg-type]


# -- passesThreshold: serve's opt-in ------------------------------------------------------------


def test_custom_vision_shape_is_byte_for_byte_without_the_opt_in() -> None:
    """The answer Custom Vision clients get: no key beyond the container's, thresholds or not."""
    det = make_detections([[0, 0, 10, 10], [10, 10, 20, 30]], [0.6, 0.9], [1, 0])
    text = json.dumps(
        custom_vision_predictions(det, LABELS, 100, 50, CUSTOM_VISION_SHAPE, None, [0.5] * 3)
    )
    assert text == (
        '[{"tagId": 0, "tagName": "cola", "probability": 0.89999998, "boundingBox": '
        '{"left": 0.1, "top": 0.2, "width": 0.1, "height": 0.40000004}}, '
        '{"tagId": 1, "tagName": "water", "probability": 0.60000002, "boundingBox": '
        '{"left": 0.0, "top": 0.0, "width": 0.1, "height": 0.2}}]'
    )
    cls = Classifications(np.array([0.2, 0.7, 0.1], np.float32))
    assert json.dumps(custom_vision_predictions(cls, LABELS, 1, 1, CUSTOM_VISION_SHAPE)) == (
        '[{"tagId": 1, "tagName": "water", "probability": 0.69999999}, '
        '{"tagId": 0, "tagName": "cola", "probability": 0.2}, '
        '{"tagId": 2, "tagName": "chips", "probability": 0.1}]'
    )
    assert "passesThreshold" not in json.dumps(result_payload(make_result(det), "dev"))


def test_passes_threshold_boxes_by_their_class_threshold() -> None:
    det = make_detections([[0, 0, 10, 10], [10, 10, 20, 30], [1, 2, 3, 4]],
                          [0.6, 0.9, 0.5], [1, 0, 2])  # fmt: skip
    thresholds = np.array([0.95, 0.6, 0.3], np.float32)  # a score equal to its threshold passes
    preds = custom_vision_predictions(
        det, LABELS, 100, 50, CUSTOM_VISION_THRESHOLDS_SHAPE, class_thresholds=thresholds
    )
    assert [(p["tagName"], p["passesThreshold"]) for p in preds] == [
        ("cola", False), ("water", True), ("chips", True)
    ]  # fmt: skip
    assert list(preds[0]) == ["tagId", "tagName", "probability", "boundingBox", "passesThreshold"]


@pytest.mark.parametrize(
    ("scores", "multilabel", "passing"),
    [
        ([0.2, 0.7, 0.1], False, {"water": True}),  # the top-1 class, over its threshold
        ([0.35, 0.4, 0.25], False, {}),  # the top-1 under its own threshold: nothing counts
        ([0.9, 0.6, 0.1], True, {"cola": True, "water": True}),  # every label over its own
    ],
)
def test_passes_threshold_classes_as_the_agent_counts_them(
    scores: list[float], multilabel: bool, passing: dict[str, bool]
) -> None:
    from edge_agent.analytics.counting import frame_counts

    cls = Classifications(np.array(scores, np.float32), multilabel=multilabel)
    thresholds = np.array([0.5, 0.5, 0.2], np.float32)
    preds = custom_vision_predictions(
        cls, LABELS, 1, 1, CUSTOM_VISION_THRESHOLDS_SHAPE, class_thresholds=thresholds
    )
    assert {p["tagName"]: p["passesThreshold"] for p in preds} == {
        label: passing.get(label, False) for label in LABELS
    }
    counted = frame_counts(cls, LABELS, thresholds)  # the counts stage agrees, label by label
    assert {label: bool(n) for label, n in counted.items()} == {
        label: passing.get(label, False) for label in LABELS
    }


def test_passes_threshold_needs_one_threshold_per_label() -> None:
    det = make_detections([[0, 0, 10, 10]])
    with pytest.raises(ValueError, match=r"one class threshold per label \(3\), but got none"):
        custom_vision_predictions(det, LABELS, 10, 10, CUSTOM_VISION_THRESHOLDS_SHAPE)
    with pytest.raises(ValueError, match=r"per label \(3\), but got 2"):
        custom_vision_predictions(det, LABELS, 10, 10, CUSTOM_VISION_THRESHOLDS_SHAPE, None, [1, 1])
    with pytest.raises(ValueError, match=r"class_id 5 is outside the 3 class thresholds"):
        passes_thresholds(make_detections([[0, 0, 1, 1]], class_id=[5]), [0.5] * 3)
