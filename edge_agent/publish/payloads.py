"""What the agent says: every MQTT payload, and the Custom Vision prediction shape that both the
result payload and ``edge-agent serve``'s answers use (pure functions, no I/O).

docs/mqtt.md and docs/serve.md document these payloads for users: change them with this
module. Topic names are in topics.py.

Both the MQTT result and the HTTP answer list predictions as Azure Custom Vision does
(``tagId``, ``tagName``, ``probability``, ``boundingBox`` with normalised ``left, top, width,
height``), so one function builds them; a :class:`PredictionShape` says where the two differ:
the HTTP answer copies the Custom Vision container (every class, boxes best first, 8 decimals),
the MQTT result is kept short for slow uplinks (5 classes, 4 and 5 decimals, boxes in the
decoder's order, plus the tracker's id). ``serve`` answers with ``passesThreshold`` on each
prediction only when the client asks (``?thresholds=true``), with CUSTOM_VISION_THRESHOLDS_SHAPE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_agent.types import UNCONFIRMED, Classifications, Detections, Result

#: Schema tag of a result payload; bump the number on an incompatible change.
RESULT_SCHEMA = "edgesight.result/1"
#: Values of the ``state`` field of the status topic.
STATUS_STATES = ("online", "offline", "degraded")
#: Classes reported for a classification result, best first.
CLASSIFICATION_TOP_K = 5
#: Decimal places: probabilities to 1e-4, normalised box coordinates to 1e-5 (0.02 px in a
#: 2,000 px frame), timings to 1 µs. Fewer digits keep the JSON short on slow uplinks.
PROBABILITY_DIGITS = 4
BOX_DIGITS = 5
TIMING_DIGITS = 3
#: The Custom Vision container rounds probabilities and box coordinates to 8 decimals.
CUSTOM_VISION_DIGITS = 8


@dataclass(frozen=True)
class PredictionShape:
    """How a list of Custom Vision predictions is cut and rounded."""

    probability_digits: int
    box_digits: int
    top_k: int | None  # classes listed for a classifier, best first; None: every class
    best_first: bool  # boxes sorted by confidence (stable), else in the decoder's order
    track_ids: bool  # add ``trackId`` to each box when the detections are tracked
    #: Add ``passesThreshold`` to each prediction: whether the model's per-class threshold
    #: passes it, as the agent counts (custom_vision_predictions needs ``class_thresholds``).
    threshold_flags: bool = False


#: The MQTT result payload (docs/mqtt.md).
RESULT_SHAPE = PredictionShape(
    probability_digits=PROBABILITY_DIGITS,
    box_digits=BOX_DIGITS,
    top_k=CLASSIFICATION_TOP_K,
    best_first=False,
    track_ids=True,
)
#: ``edge-agent serve``'s answers, as the Custom Vision container gives them (docs/serve.md).
CUSTOM_VISION_SHAPE = PredictionShape(
    probability_digits=CUSTOM_VISION_DIGITS,
    box_digits=CUSTOM_VISION_DIGITS,
    top_k=None,
    best_first=True,
    track_ids=False,
)
#: The same, with ``passesThreshold`` on each prediction (``serve``'s opt-in, docs/serve.md).
CUSTOM_VISION_THRESHOLDS_SHAPE = replace(CUSTOM_VISION_SHAPE, threshold_flags=True)
#: The key the opt-in adds; Custom Vision has no such field, so clients must ask for it.
PASSES_THRESHOLD = "passesThreshold"


def _label(labels: list[str], class_id: int, model: str | None) -> str:
    if not 0 <= class_id < len(labels):
        of_model = f" of model {model!r}" if model else ""
        raise ValueError(
            f"class_id {class_id} is outside the {len(labels)} labels{of_model} "
            f"(expected 0..{len(labels) - 1})"
        )
    return labels[class_id]


def passes_thresholds(
    predictions: Detections | Classifications, class_thresholds: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Which predictions pass their class's threshold, as the agent counts them: a boolean per
    box for detections, per class for classifications.

    A box passes when its confidence reaches its class's threshold (the decoder has already
    dropped the others, so with the bundle's own thresholds every box does). A multilabel
    classifier passes every label whose score reaches its threshold; a multiclass one only its
    top-1 class, and only when that score reaches the class's threshold (the counts stage's
    rule, which is also how export picks the per-class thresholds: docs/export.md).
    """
    thresholds = np.asarray(class_thresholds, np.float32)
    if isinstance(predictions, Detections):
        outside = (predictions.class_id < 0) | (predictions.class_id >= len(thresholds))
        if outside.any():
            raise ValueError(
                f"class_id {int(predictions.class_id[outside][0])} is outside the "
                f"{len(thresholds)} class thresholds (expected 0..{len(thresholds) - 1})"
            )
        return np.asarray(predictions.confidence >= thresholds[predictions.class_id], bool)
    return predictions.decided(thresholds)


def _detections(
    det: Detections,
    labels: list[str],
    width: int,
    height: int,
    shape: PredictionShape,
    model: str | None,
    passing: np.ndarray | None,
) -> list[dict[str, Any]]:
    boxes = det.to_custom_vision_boxes(width, height)
    order = np.argsort(-det.confidence, kind="stable") if shape.best_first else range(len(det))
    out: list[dict[str, Any]] = []
    for i in order:
        class_id = int(det.class_id[i])
        left, top, box_w, box_h = (round(float(v), shape.box_digits) for v in boxes[i])
        pred: dict[str, Any] = {
            "tagId": class_id,
            "tagName": _label(labels, class_id, model),
            "probability": round(float(det.confidence[i]), shape.probability_digits),
            "boundingBox": {"left": left, "top": top, "width": box_w, "height": box_h},
        }
        if shape.track_ids and det.tracker_id is not None and det.tracker_id[i] != UNCONFIRMED:
            pred["trackId"] = int(det.tracker_id[i])
        if passing is not None:
            pred[PASSES_THRESHOLD] = bool(passing[i])
        out.append(pred)
    return out


def _classifications(
    cls: Classifications,
    labels: list[str],
    shape: PredictionShape,
    model: str | None,
    passing: np.ndarray | None,
) -> list[dict[str, Any]]:
    k = len(cls.scores) if shape.top_k is None else shape.top_k
    out: list[dict[str, Any]] = []
    for class_id, score in cls.top(k):
        pred: dict[str, Any] = {
            "tagId": class_id,
            "tagName": _label(labels, class_id, model),
            "probability": round(score, shape.probability_digits),
        }
        if passing is not None:
            pred[PASSES_THRESHOLD] = bool(passing[class_id])
        out.append(pred)
    return out


def custom_vision_predictions(
    predictions: Detections | Classifications,
    labels: list[str],
    width: int,
    height: int,
    shape: PredictionShape,
    model: str | None = None,
    class_thresholds: Sequence[float] | np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Predictions as Custom Vision lists them, cut and rounded as ``shape`` says.

    ``width`` and ``height`` are the frame's size in pixels (boxes are normalised by it).
    ``class_thresholds`` (one per label, e.g. ``Predictor.thresholds``) is needed, and only
    read, when ``shape.threshold_flags`` asks for ``passesThreshold`` (see passes_thresholds).
    Raises ValueError for a class id outside ``labels`` (naming ``model`` when given).
    """
    if not isinstance(predictions, Detections | Classifications):
        raise ValueError(
            "predictions must be Detections or Classifications, "
            f"but got {type(predictions).__name__}"
        )
    passing = None
    if shape.threshold_flags:
        if class_thresholds is None or len(class_thresholds) != len(labels):
            got = "none" if class_thresholds is None else f"{len(class_thresholds)}"
            raise ValueError(
                f"passesThreshold needs one class threshold per label ({len(labels)}), "
                f"but got {got}"
            )
        passing = passes_thresholds(predictions, class_thresholds)
    if isinstance(predictions, Detections):
        return _detections(predictions, labels, width, height, shape, model, passing)
    return _classifications(predictions, labels, shape, model, passing)


def result_payload(result: Result, device_id: str, run: str | None = None) -> dict[str, Any]:
    """The ``<src>/result`` payload (schema edgesight.result/1) for one frame.

    ``id`` is stable for a given frame so a consumer can drop what QoS 1 redelivers; with the
    agent's ``run`` id it is ``<device>/<run>/<source>/<seq>``, unique across restarts.
    """
    width, height = result.frame_size
    predictions = custom_vision_predictions(
        result.predictions, result.labels, width, height, RESULT_SHAPE, result.model
    )
    ts = float(result.ts)
    frame_id = (
        f"{device_id}/{run}/{result.source_id}/{result.seq}"
        if run is not None
        else f"{device_id}/{result.source_id}/{result.seq}/{int(ts * 1000)}"
    )
    payload: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "id": frame_id,
        "device": device_id,
        "source": result.source_id,
        "seq": int(result.seq),
        "ts": ts,
        "origin": result.origin,
        "model": result.model,
        "task": result.task,
        "inferred": bool(result.inferred),
        "width": int(width),
        "height": int(height),
        "predictions": predictions,
        "counts": {str(label): int(n) for label, n in result.counts.items()},
        "timing_ms": {str(k): round(float(v), TIMING_DIGITS) for k, v in result.timing_ms.items()},
    }
    if run is not None:
        payload["run"] = run
    return payload


def status_payload(
    state: str,
    ts: float,
    agent_version: str,
    model: dict[str, Any] | None,
    sources: list[str],
    totals: dict[str, int] | None = None,
    thermal: dict[str, Any] | None = None,
    run: str | None = None,
    heartbeat_s: float | None = None,
    source_state: dict[str, dict[str, Any]] | None = None,
    mqtt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The retained ``status`` payload; ``state`` is one of STATUS_STATES; ``totals`` are the
    stats registry's counts since start (``StatsRegistry.totals``); ``thermal`` is present
    while the agent runs slower to cool down (``ThermalState``); ``source_state`` is each
    source's state (``source_states_payload``); ``mqtt`` the link's figures when notable."""
    if state not in STATUS_STATES:
        raise ValueError(f"status state must be one of {list(STATUS_STATES)}, but got {state!r}")
    payload = {
        "state": state,
        "ts": float(ts),
        "agent_version": agent_version,
        "model": model,
        "sources": list(sources),
        "totals": {str(k): int(v) for k, v in (totals or {}).items()},
    }
    if thermal is not None:
        payload["thermal"] = thermal
    if run is not None:
        payload["run"] = run
    if heartbeat_s is not None:
        payload["heartbeat_s"] = float(heartbeat_s)
    if source_state is not None:
        payload["source_state"] = source_state
    if mqtt is not None:
        payload["mqtt"] = mqtt
    return payload


#: SourceMetrics counters whose sum is ``frames_dropped``: frames the camera gave and no
#: result came of. Frames the fps limit skips are by design, not losses: not counted.
DROPPED_COUNTERS = ("dropped_stale", "frames_drained")


def source_states_payload(
    states: dict[str, dict[str, Any]], counters: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``source_state`` of the status and stats: per source (those that said a state,
    ``SourceStates.snapshot()``) its state, reason, since, last frame, size, and from its
    counters (``StatsRegistry.snapshot()["source"]``) ``reopens`` and ``frames_dropped``."""
    out: dict[str, dict[str, Any]] = {}
    for sid, st in states.items():
        c = counters.get(sid, {})
        last = st.get("last_frame_ts")
        out[sid] = {
            "state": str(st["state"]),
            "reason": st.get("reason"),
            "since": round(float(st["since"]), 3),
            "last_frame_ts": None if last is None else round(float(last), 3),
            "width": st.get("width"),
            "height": st.get("height"),
            "reopens": int(c.get("reopens", 0)),
            "frames_dropped": sum(int(c.get(name, 0)) for name in DROPPED_COUNTERS),
        }
    return out


def count_payload(n: int, ts: float, run: str | None = None) -> dict[str, Any]:
    """The retained ``<src>/count/<label>`` payload."""
    payload: dict[str, Any] = {"count": int(n), "ts": float(ts)}
    if run is not None:
        payload["run"] = run
    return payload


def dropped_payload(
    last: dict[str, int], total: dict[str, int], ts: float, run: str
) -> dict[str, Any]:
    """The retained ``dropped`` summary: what the outbox dropped (oldest first, when full or
    too old) since the last summary, and since this run started, per kind of message."""
    return {
        "ts": float(ts),
        "run": run,
        "dropped": {str(k): int(v) for k, v in sorted(last.items())},
        "total": {str(k): int(v) for k, v in sorted(total.items())},
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (JSON has no such numbers)."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"payload is not valid JSON (NaN or infinity?): {exc}") from exc
    return text.encode("utf-8")
