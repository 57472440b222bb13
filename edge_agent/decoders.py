"""Raw model outputs -> Detections or Classifications, as the manifest's decoder says.

Decoding is vectorised numpy; NMS is OpenCV's class-wise ``NMSBoxesBatched`` so nothing here
loops over boxes in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from edge_agent.anchors import load_anchors
from edge_agent.manifest import (
    BoxCoder,
    Manifest,
    SigmoidDecoder,
    SoftmaxDecoder,
    SsdAnchorsDecoder,
    SsdBoxesDecoder,
    TflitePostprocessDecoder,
)
from edge_agent.preprocess import Transform
from edge_agent.types import Classifications, Detections, cxcywh_to_xyxy, xywh_to_xyxy

#: Candidates kept (best first) before NMS; bounds NMS cost on noisy frames, as torchvision's
#: SSD does with its per-class top-k.
PRE_NMS_TOP_K = 1000

Outputs = Mapping[str, np.ndarray]
DecodeFn = Callable[[Outputs, Transform], Detections | Classifications]


class DecodeError(ValueError):
    """The model's outputs do not fit the manifest (shape, name or label count)."""


def _output(outputs: Outputs, name: str | None, what: str) -> np.ndarray:
    if name is None:
        distinct = {id(v): v for v in outputs.values()}  # a runtime may alias one tensor
        if len(distinct) == 1:
            return next(iter(distinct.values()))
        if len(outputs) != 1:
            raise DecodeError(
                f"decoder needs '{what}' named: the model has outputs {sorted(outputs)}"
            )
        return next(iter(outputs.values()))
    try:
        return outputs[name]
    except KeyError:
        raise DecodeError(
            f"decoder {what} output {name!r} not found; the model has {sorted(outputs)}"
        ) from None


def _squeeze_batch(array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    if array.ndim == ndim + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != ndim:
        raise DecodeError(
            f"{what} output must have {ndim} dimensions (+ batch of 1), but got shape {array.shape}"
        )
    return array


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _classifier(cfg: SoftmaxDecoder | SigmoidDecoder, n_labels: int) -> DecodeFn:
    multilabel = cfg.type == "sigmoid"

    def decode(outputs: Outputs, transform: Transform) -> Classifications:
        raw = _squeeze_batch(_output(outputs, cfg.output, "scores"), 1, "classifier")
        if raw.shape[0] != n_labels:
            raise DecodeError(
                f"classifier output has {raw.shape[0]} scores but the manifest "
                f"has {n_labels} labels"
            )
        scores = raw.astype(np.float32)
        if cfg.from_logits:
            scores = sigmoid(scores) if multilabel else softmax(scores)
        return Classifications(scores=scores.astype(np.float32), multilabel=multilabel)

    return decode


def boxes_to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """Any supported box layout -> xyxy."""
    if box_format == "xyxy":
        return boxes.astype(np.float32)
    if box_format == "yxyx":
        return boxes[:, [1, 0, 3, 2]].astype(np.float32)
    if box_format == "xywh":
        return xywh_to_xyxy(boxes)
    if box_format == "cxcywh":
        return cxcywh_to_xyxy(boxes)
    raise ValueError(f"box_format must be xyxy, yxyx, xywh or cxcywh, got {box_format!r}")


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
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
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


def select_and_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    class_thresholds: np.ndarray,
    nms_iou: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class threshold, then class-wise NMS on (N, 4) boxes and (N, C) scores.

    An anchor may yield several classes (as torchvision's SSD does); NMS runs per class.
    """
    anchor_idx, class_idx, conf = candidates(scores, class_thresholds)
    return nms(xyxy[anchor_idx], conf, class_idx, nms_iou, max_detections)


def _activate(scores: np.ndarray, activation: str, background: int | None) -> np.ndarray:
    scores = scores.astype(np.float32)
    if activation == "sigmoid":
        scores = sigmoid(scores)
    elif activation == "softmax":
        scores = softmax(scores)
    if background is not None:
        scores = np.delete(scores, background, axis=1)
    return scores


def _check_classes(scores: np.ndarray, n_labels: int) -> None:
    if scores.shape[1] != n_labels:
        raise DecodeError(
            f"scores output has {scores.shape[1]} classes (after background) "
            f"but the manifest has {n_labels} labels"
        )


def _ssd_boxes(cfg: SsdBoxesDecoder, manifest: Manifest, thresholds: np.ndarray) -> DecodeFn:
    n_labels = len(manifest.labels)
    size = np.array([manifest.input.width, manifest.input.height] * 2, np.float32)

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        boxes = _squeeze_batch(_output(outputs, cfg.outputs.boxes, "boxes"), 2, "boxes")
        scores = _squeeze_batch(_output(outputs, cfg.outputs.scores, "scores"), 2, "scores")
        if boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[0]:
            raise DecodeError(
                f"boxes output must be (N, 4) matching scores (N, C), but got "
                f"{boxes.shape} and {scores.shape}"
            )
        scores = scores.astype(np.float32)
        if cfg.score_activation == "sigmoid":
            scores = sigmoid(scores)
        elif cfg.score_activation == "softmax":
            scores = softmax(scores)
        if cfg.background_class is not None:
            scores = np.delete(scores, cfg.background_class, axis=1)
        if scores.shape[1] != n_labels:
            raise DecodeError(
                f"scores output has {scores.shape[1]} classes (after background) "
                f"but the manifest has {n_labels} labels"
            )
        xyxy = boxes_to_xyxy(boxes, cfg.box_format)
        if cfg.normalized:
            xyxy = xyxy * size
        th = manifest.thresholds
        kept, conf, cls = select_and_nms(xyxy, scores, thresholds, th.nms_iou, th.max_detections)
        return Detections(xyxy=transform.to_frame(kept), confidence=conf, class_id=cls)

    return decode


#: torchvision's BoxCoder clamps dw/dh so exp() cannot overflow: log(1000 / 16).
BBOX_XFORM_CLIP = float(np.log(1000.0 / 16))


def decode_boxes(codes: np.ndarray, anchors: np.ndarray, cfg: BoxCoder) -> np.ndarray:
    """Faster R-CNN box coder: encodings against cx, cy, w, h anchors -> xyxy, same units."""
    weights = np.asarray(cfg.weights, np.float32)
    if cfg.order == "yxhw":  # TF: ty, tx, th, tw -> dx, dy, dw, dh
        codes, weights = codes[:, [1, 0, 3, 2]], weights[[1, 0, 3, 2]]
    d = codes.astype(np.float32) / weights
    dwh = np.minimum(d[:, 2:], BBOX_XFORM_CLIP)
    centre = d[:, :2] * anchors[:, 2:] + anchors[:, :2]
    half = np.exp(dwh) * anchors[:, 2:] / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _ssd_anchors(
    cfg: SsdAnchorsDecoder, manifest: Manifest, thresholds: np.ndarray, bundle_dir: Path | None
) -> DecodeFn:
    width, height = manifest.input.width, manifest.input.height
    anchors = load_anchors(cfg, bundle_dir, width, height)
    size = np.array([width, height] * 2, np.float32)
    th = manifest.thresholds

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        codes = _squeeze_batch(_output(outputs, cfg.outputs.boxes, "boxes"), 2, "boxes")
        scores = _squeeze_batch(_output(outputs, cfg.outputs.scores, "scores"), 2, "scores")
        if codes.shape != (len(anchors), 4) or scores.shape[0] != len(anchors):
            raise DecodeError(
                f"with {len(anchors)} anchors, boxes must be ({len(anchors)}, 4) "
                f"and scores ({len(anchors)}, C), but got {codes.shape} and "
                f"{scores.shape}"
            )
        scores = _activate(scores, cfg.score_activation, cfg.background_class)
        _check_classes(scores, len(manifest.labels))
        anchor_idx, class_idx, conf = candidates(scores, thresholds)
        boxes = decode_boxes(codes[anchor_idx], anchors[anchor_idx], cfg.box_coder)
        boxes = np.clip(boxes, 0.0, 1.0) * size  # torchvision clips to the image before NMS
        kept, conf, cls = nms(boxes, conf, class_idx, th.nms_iou, th.max_detections)
        return Detections(xyxy=transform.to_frame(kept), confidence=conf, class_id=cls)

    return decode


def _tflite_postprocess(
    cfg: TflitePostprocessDecoder, manifest: Manifest, thresholds: np.ndarray
) -> DecodeFn:
    size = np.array([manifest.input.width, manifest.input.height] * 2, np.float32)
    n_labels = len(manifest.labels)

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        out = cfg.outputs
        boxes = _squeeze_batch(_output(outputs, out.boxes, "boxes"), 2, "boxes")
        classes = _squeeze_batch(_output(outputs, out.classes, "classes"), 1, "classes")
        scores = _squeeze_batch(_output(outputs, out.scores, "scores"), 1, "scores")
        count = int(np.asarray(_output(outputs, out.count, "count")).reshape(-1)[0])
        count = min(count, len(scores))
        cls = classes[:count].astype(np.int64) + cfg.class_offset
        conf = scores[:count].astype(np.float32)
        valid = (cls >= 0) & (cls < n_labels)
        keep = valid & (conf >= thresholds[np.clip(cls, 0, n_labels - 1)])
        order = np.argsort(-conf[keep], kind="stable")[: manifest.thresholds.max_detections]
        xyxy = boxes[:count][keep][order][:, [1, 0, 3, 2]].astype(np.float32) * size
        return Detections(
            xyxy=transform.to_frame(xyxy),
            confidence=conf[keep][order],
            class_id=cls[keep][order].astype(np.int32),
        )

    return decode


def build_decoder(
    manifest: Manifest, score_override: float | None = None, bundle_dir: Path | None = None
) -> DecodeFn:
    """The decode function for this manifest, with thresholds resolved once.

    ``bundle_dir`` is where decoder files (anchors) are read from."""
    cfg = manifest.decoder
    thresholds = np.asarray(manifest.class_thresholds(score_override), np.float32)
    if isinstance(cfg, SoftmaxDecoder | SigmoidDecoder):
        return _classifier(cfg, len(manifest.labels))
    if isinstance(cfg, SsdBoxesDecoder):
        return _ssd_boxes(cfg, manifest, thresholds)
    if isinstance(cfg, SsdAnchorsDecoder):
        return _ssd_anchors(cfg, manifest, thresholds, bundle_dir)
    if isinstance(cfg, TflitePostprocessDecoder):
        return _tflite_postprocess(cfg, manifest, thresholds)
    raise DecodeError(f"decoder type {cfg.type!r} is not supported by this agent")
