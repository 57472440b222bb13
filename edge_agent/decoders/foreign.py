"""Decoders for models made elsewhere: graphs that already post-process their detections
(TFLite's detection post-process op, Custom Vision S1 exports) and YOLOv2 region grids
(Custom Vision compact exports)."""

from __future__ import annotations

import numpy as np

from edge_agent.bundle.manifest import (
    DetectionsDecoder,
    Manifest,
    TflitePostprocessDecoder,
    YoloRegionsDecoder,
)
from edge_agent.decoders.ops import (
    DecodeError,
    DecodeFn,
    Outputs,
    candidates,
    input_size,
    nms_detections,
    output,
    sigmoid,
    softmax,
    squeeze_batch,
)
from edge_agent.geometry import boxes_to_xyxy
from edge_agent.preprocess import Transform
from edge_agent.types import Detections


def detections_decoder(
    cfg: DetectionsDecoder | TflitePostprocessDecoder, manifest: Manifest, thresholds: np.ndarray
) -> DecodeFn:
    """Boxes, classes, scores (and a count) already suppressed in the graph: threshold per
    class, keep the best ``max_detections``, map boxes back to the frame."""
    size = input_size(manifest.input)
    n_labels = len(manifest.labels)
    if isinstance(cfg, TflitePostprocessDecoder):  # the op's fixed convention
        box_format, normalized = "yxyx", True
    else:
        box_format, normalized = cfg.box_format, cfg.normalized

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        out = cfg.outputs
        boxes = squeeze_batch(output(outputs, out.boxes, "boxes"), 2, "boxes")
        classes = squeeze_batch(output(outputs, out.classes, "classes"), 1, "classes")
        scores = squeeze_batch(output(outputs, out.scores, "scores"), 1, "scores")
        count = len(scores)
        if out.count is not None:
            count = min(count, int(np.asarray(output(outputs, out.count, "count")).ravel()[0]))
        if len(boxes) < count or len(classes) < count:
            raise DecodeError(
                f"detections outputs disagree: {len(boxes)} boxes, "
                f"{len(classes)} classes, {count} scores"
            )
        cls = classes[:count].astype(np.int64) + cfg.class_offset
        conf = scores[:count].astype(np.float32)
        valid = (cls >= 0) & (cls < n_labels)
        keep = np.flatnonzero(valid & (conf >= thresholds[np.clip(cls, 0, n_labels - 1)]))
        keep = keep[np.argsort(-conf[keep], kind="stable")[: manifest.thresholds.max_detections]]
        xyxy = boxes_to_xyxy(boxes[keep], box_format)
        if normalized:
            xyxy = xyxy * size
        class_id = cls[keep].astype(np.int32)
        return Detections(xyxy=transform.to_frame(xyxy), confidence=conf[keep], class_id=class_id)

    return decode


def yolo_regions_decoder(
    cfg: YoloRegionsDecoder, manifest: Manifest, thresholds: np.ndarray
) -> DecodeFn:
    """YOLOv2 regions: per cell and anchor, x, y, w, h, objectness and class logits;
    score = sigmoid(objectness) x softmax(classes), then class-wise NMS."""
    anchors = np.asarray(cfg.anchors, np.float32)  # (A, 2) width, height in cells
    n_labels = len(manifest.labels)
    size = input_size(manifest.input)
    th = manifest.thresholds

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        grid = squeeze_batch(output(outputs, cfg.output, "regions"), 3, "regions")
        channels, rows, cols = grid.shape
        if channels != len(anchors) * (5 + n_labels):
            raise DecodeError(
                f"regions output has {channels} channels; with {len(anchors)} "
                f"anchors and {n_labels} labels it needs "
                f"{len(anchors) * (5 + n_labels)}"
            )
        g = grid.reshape(len(anchors), 5 + n_labels, rows, cols).transpose(2, 3, 0, 1)
        scores = softmax(g[..., 5:]) * sigmoid(g[..., 4:5])  # (rows, cols, A, C)
        cell, cls, conf = candidates(scores.reshape(-1, n_labels), thresholds)
        r, rest = np.divmod(cell, cols * len(anchors))
        c, a = np.divmod(rest, len(anchors))
        box = g[r, c, a, :4]
        xy = sigmoid(box[:, :2]) if cfg.xy_activation == "sigmoid" else box[:, :2]
        cx = (xy[:, 0] + c) / cols
        cy = (xy[:, 1] + r) / rows
        w = np.exp(box[:, 2]) * anchors[a, 0] / cols
        h = np.exp(box[:, 3]) * anchors[a, 1] / rows
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        xyxy = np.clip(xyxy, 0.0, 1.0) * size
        return nms_detections(xyxy, conf, cls, th, transform)

    return decode
