"""Raw model outputs -> Detections or Classifications, as the manifest's decoder says.

Decoding is vectorised numpy; NMS is OpenCV's class-wise ``NMSBoxesBatched`` so nothing here
loops over boxes in Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.anchors import load_anchors
from edge_agent.decode_ops import (
    DecodeError,
    DecodeFn,
    Outputs,
    boxes_to_xyxy,
    input_size,
    logit_bar,
    nms_detections,
    output,
    scored_candidates,
    sigmoid,
    softmax,
    squeeze_batch,
)
from edge_agent.foreign_decoders import detections_decoder, yolo_regions_decoder
from edge_agent.manifest import (
    BoxCoder,
    DetectionsDecoder,
    Manifest,
    SigmoidDecoder,
    SoftmaxDecoder,
    SsdAnchorsDecoder,
    SsdBoxesDecoder,
    TflitePostprocessDecoder,
    YoloRegionsDecoder,
)
from edge_agent.preprocess import Transform
from edge_agent.types import Classifications, Detections


def _classifier(cfg: SoftmaxDecoder | SigmoidDecoder, n_labels: int) -> DecodeFn:
    multilabel = cfg.type == "sigmoid"

    def decode(outputs: Outputs, transform: Transform) -> Classifications:
        raw = squeeze_batch(output(outputs, cfg.output, "scores"), 1, "classifier")
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


def _ssd_boxes(cfg: SsdBoxesDecoder, manifest: Manifest, thresholds: np.ndarray) -> DecodeFn:
    size = input_size(manifest.input)
    th = manifest.thresholds
    bar = logit_bar(thresholds)

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        boxes = squeeze_batch(output(outputs, cfg.outputs.boxes, "boxes"), 2, "boxes")
        scores = squeeze_batch(output(outputs, cfg.outputs.scores, "scores"), 2, "scores")
        if boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[0]:
            raise DecodeError(
                f"boxes output must be (N, 4) matching scores (N, C), but got "
                f"{boxes.shape} and {scores.shape}"
            )
        anchor_idx, class_idx, conf = scored_candidates(
            scores, cfg.score_activation, cfg.background_class, thresholds, bar
        )
        xyxy = boxes_to_xyxy(boxes[anchor_idx], cfg.box_format)
        if cfg.normalized:
            xyxy = xyxy * size
        return nms_detections(xyxy, conf, class_idx, th, transform)

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
    size = input_size(manifest.input)
    th = manifest.thresholds
    bar = logit_bar(thresholds)

    def decode(outputs: Outputs, transform: Transform) -> Detections:
        codes = squeeze_batch(output(outputs, cfg.outputs.boxes, "boxes"), 2, "boxes")
        scores = squeeze_batch(output(outputs, cfg.outputs.scores, "scores"), 2, "scores")
        if codes.shape != (len(anchors), 4) or scores.shape[0] != len(anchors):
            raise DecodeError(
                f"with {len(anchors)} anchors, boxes must be ({len(anchors)}, 4) "
                f"and scores ({len(anchors)}, C), but got {codes.shape} and "
                f"{scores.shape}"
            )
        anchor_idx, class_idx, conf = scored_candidates(
            scores, cfg.score_activation, cfg.background_class, thresholds, bar
        )
        boxes = decode_boxes(codes[anchor_idx], anchors[anchor_idx], cfg.box_coder)
        boxes = np.clip(boxes, 0.0, 1.0) * size  # torchvision clips to the image before NMS
        return nms_detections(boxes, conf, class_idx, th, transform)

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
    if isinstance(cfg, TflitePostprocessDecoder | DetectionsDecoder):
        return detections_decoder(cfg, manifest, thresholds)
    if isinstance(cfg, YoloRegionsDecoder):
        return yolo_regions_decoder(cfg, manifest, thresholds)
    raise DecodeError(f"decoder type {cfg.type!r} is not supported by this agent")
