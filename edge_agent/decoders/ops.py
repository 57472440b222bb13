"""Decoding primitives shared by every decoder: output lookup, activations, candidate
selection and class-wise NMS (OpenCV's ``NMSBoxesBatched``), all vectorised numpy."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import cv2
import numpy as np

from edge_agent.bundle.manifest import InputSpec, Thresholds
from edge_agent.geometry import xyxy_to_xywh
from edge_agent.preprocess import Transform
from edge_agent.types import Classifications, Detections

#: Candidates kept (best first) before NMS; bounds NMS cost on noisy frames, as torchvision's
#: SSD does with its per-class top-k.
PRE_NMS_TOP_K = 1000

Outputs = Mapping[str, np.ndarray]
DecodeFn = Callable[[Outputs, Transform], Detections | Classifications]


class DecodeError(ValueError):
    """The model's outputs do not fit the manifest (shape, name or label count)."""


def output(outputs: Outputs, name: str | None, what: str) -> np.ndarray:
    if name is None:
        distinct = {id(v): v for v in outputs.values()}  # a runtime may alias one tensor
        if len(distinct) != 1:
            raise DecodeError(
                f"decoder needs '{what}' named: the model has outputs {sorted(outputs)}"
            )
        return next(iter(distinct.values()))
    try:
        return outputs[name]
    except KeyError:
        raise DecodeError(
            f"decoder {what} output {name!r} not found; the model has {sorted(outputs)}"
        ) from None


def squeeze_batch(array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    if array.ndim == ndim + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != ndim:
        raise DecodeError(
            f"{what} output must have {ndim} dimensions (+ batch of 1), but got shape {array.shape}"
        )
    return array


#: numpy reduces a short last axis slowly (36 us for the max of 840 x 5): up to this many
#: classes, detector scores are reduced column by column instead (2x faster softmax).
COLUMNWISE_MAX_CLASSES = 32
#: ... and for more rows than this; fewer rows are faster in the plain form's fewer calls.
COLUMNWISE_MIN_ROWS = 256


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; this runs on every frame, so it avoids temporaries."""
    if (
        x.ndim == 2
        and axis in (-1, 1)
        and 1 < x.shape[1] <= COLUMNWISE_MAX_CLASSES
        and x.shape[0] > COLUMNWISE_MIN_ROWS
    ):
        top = x[:, 0].copy()
        for j in range(1, x.shape[1]):
            np.maximum(top, x[:, j], out=top)
        e = x - top[:, np.newaxis]
        np.exp(e, out=e)
        total = e[:, 0].copy()
        for j in range(1, x.shape[1]):
            total += e[:, j]
        e /= total[:, np.newaxis]
        return e
    e = x - x.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: no overflow for large negative logits, unlike 1/(1+e^-x)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def candidates(
    scores: np.ndarray, class_thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor index, class index, score) of every score at or above its class threshold,
    at most PRE_NMS_TOP_K of them, so only these boxes need decoding."""
    anchor_idx, class_idx = np.nonzero(scores >= class_thresholds[np.newaxis, :])
    conf = scores[anchor_idx, class_idx]
    if len(conf) > PRE_NMS_TOP_K:
        top = np.argpartition(-conf, PRE_NMS_TOP_K)[:PRE_NMS_TOP_K]
        anchor_idx, class_idx, conf = anchor_idx[top], class_idx[top], conf[top]
    return anchor_idx, class_idx, conf


def nms(
    xyxy: np.ndarray, conf: np.ndarray, class_idx: np.ndarray, nms_iou: float, max_detections: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise NMS over candidates; kept boxes, scores and classes, best first."""
    if len(conf) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    xywh = xyxy_to_xywh(xyxy)
    kept = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), conf.tolist(), class_idx.tolist(), 0.0, float(nms_iou)
    )
    keep = np.asarray(kept, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-conf[keep], kind="stable")][:max_detections]
    return (
        xyxy[keep].astype(np.float32),
        conf[keep].astype(np.float32),
        class_idx[keep].astype(np.int32),
    )


def input_size(spec: InputSpec) -> np.ndarray:
    """(w, h, w, h) of the model input: scales normalised xyxy boxes to input pixels."""
    return np.array([spec.width, spec.height] * 2, np.float32)


def nms_detections(
    xyxy: np.ndarray,
    conf: np.ndarray,
    class_idx: np.ndarray,
    thresholds: Thresholds,
    transform: Transform,
) -> Detections:
    """Class-wise NMS on candidates in input pixels, then the kept boxes in frame pixels."""
    kept, conf, cls = nms(xyxy, conf, class_idx, thresholds.nms_iou, thresholds.max_detections)
    return Detections(xyxy=transform.to_frame(kept), confidence=conf, class_id=cls)


def drop_background(scores: np.ndarray, background: int | None) -> np.ndarray:
    """The score columns of real classes; a view when the background is first or last."""
    if background is None:
        return scores
    if background in (0, -1, scores.shape[1] - 1):  # a view, not np.delete's copy
        return scores[:, 1:] if background == 0 else scores[:, :-1]
    return np.delete(scores, background, axis=1)


def activate(scores: np.ndarray, activation: str, background: int | None) -> np.ndarray:
    scores = scores.astype(np.float32, copy=False)
    if activation == "sigmoid":
        scores = sigmoid(scores)
    elif activation == "softmax":
        scores = softmax(scores)
    return drop_background(scores, background)


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse of the sigmoid: -inf for 0, +inf for 1."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


#: Slack on logit comparisons so float rounding can never drop a score that passes exactly.
PROBABILITY_SLACK = 1e-6


def logit_bar(class_thresholds: np.ndarray) -> np.ndarray:
    """Per-class thresholds as logits, a column for comparing (C, N) class-major scores.

    Lowered by PROBABILITY_SLACK first: float32 scores round by up to a few 1e-7, which near 1
    is a large step in logit space (a threshold of 1.0 is passed by saturated scores)."""
    lowered = np.clip(np.asarray(class_thresholds, np.float64) - PROBABILITY_SLACK, 0.0, 1.0)
    return logit(lowered).astype(np.float32)[:, np.newaxis]


def scored_candidates(
    raw: np.ndarray,
    activation: str,
    background: int | None,
    class_thresholds: np.ndarray,
    bar: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``candidates`` of the activated scores, activating only anchors that can pass.

    Most of an SSD's thousands of anchors are background, so thresholds are compared on the
    logits first: exactly for sigmoid (sigmoid(x) >= t iff x >= logit(t)); for softmax with a
    background column, p_c >= t needs x_c - x_background >= logit(t), so only rows meeting
    that are put through the softmax and then checked exactly. ``bar`` is
    ``logit_bar(class_thresholds)``, for callers that decode every frame.
    """
    raw = raw.astype(np.float32, copy=False)
    check_classes(drop_background(raw[:0], background), len(class_thresholds))
    if activation not in ("sigmoid", "softmax") or (activation == "softmax" and background is None):
        return candidates(activate(raw, activation, background), class_thresholds)
    if bar is None:
        bar = logit_bar(class_thresholds)
    by_class = np.ascontiguousarray(raw.T)  # contiguous rows: 6x faster than column views
    fg = drop_background(by_class.T, background).T
    if activation == "softmax":
        fg = fg - by_class[background]
    rows = np.flatnonzero((fg >= bar).any(axis=0))
    anchor_idx, class_idx, conf = candidates(
        activate(raw[rows], activation, background), class_thresholds
    )
    return rows[anchor_idx], class_idx, conf


def check_classes(scores: np.ndarray, n_labels: int) -> None:
    """Scores (after the background is dropped) must have one column per label."""
    if scores.shape[1] != n_labels:
        raise DecodeError(
            f"scores output has {scores.shape[1]} classes (after background) "
            f"but the manifest has {n_labels} labels"
        )
