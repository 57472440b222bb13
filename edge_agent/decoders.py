"""Raw model outputs -> Detections or Classifications, as the manifest's decoder says.

Decoding is vectorised numpy; NMS is OpenCV's class-wise ``NMSBoxesBatched`` so nothing here
loops over boxes in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from edge_agent.manifest import Manifest, SigmoidDecoder, SoftmaxDecoder, SsdBoxesDecoder
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


def select_and_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    class_thresholds: np.ndarray,
    nms_iou: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class threshold, then class-wise NMS on (N, 4) boxes and (N, C) scores.

    Returns kept boxes, confidences and class ids, best first. An anchor may yield several
    classes (as torchvision's SSD does); NMS is applied within each class.
    """
    anchor_idx, class_idx = np.nonzero(scores >= class_thresholds[np.newaxis, :])
    conf = scores[anchor_idx, class_idx]
    if len(conf) > PRE_NMS_TOP_K:
        top = np.argpartition(-conf, PRE_NMS_TOP_K)[:PRE_NMS_TOP_K]
        anchor_idx, class_idx, conf = anchor_idx[top], class_idx[top], conf[top]
    if len(conf) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    cand = xyxy[anchor_idx]
    xywh = np.concatenate([cand[:, :2], cand[:, 2:] - cand[:, :2]], axis=1)
    kept = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), conf.tolist(), class_idx.tolist(), 0.0, float(nms_iou)
    )
    keep = np.asarray(kept, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-conf[keep], kind="stable")][:max_detections]
    return cand[keep], conf[keep].astype(np.float32), class_idx[keep].astype(np.int32)


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
        kept, conf, cls = select_and_nms(
            xyxy,
            scores,
            thresholds,
            manifest.thresholds.nms_iou,
            manifest.thresholds.max_detections,
        )
        return Detections(xyxy=transform.to_frame(kept), confidence=conf, class_id=cls)

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
    raise DecodeError(f"decoder type {cfg.type!r} is not supported by this agent")
