"""SSD decoders: boxes the graph already decoded (``ssd_boxes``) and raw box encodings against
anchors (``ssd_anchors``, our own SSDLite exports and TF Object Detection API models).

Decoding is vectorised numpy; NMS is OpenCV's class-wise ``NMSBoxesBatched`` so nothing here
loops over boxes in Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.bundle.manifest import (
    BoxCoder,
    Manifest,
    SsdAnchorsDecoder,
    SsdBoxesDecoder,
)
from edge_agent.decoders.anchors import load_anchors
from edge_agent.decoders.ops import (
    DecodeError,
    DecodeFn,
    Outputs,
    input_size,
    logit_bar,
    nms_detections,
    output,
    scored_candidates,
    squeeze_batch,
)
from edge_agent.geometry import boxes_to_xyxy
from edge_agent.preprocess import Transform
from edge_agent.types import Detections


def ssd_boxes_decoder(cfg: SsdBoxesDecoder, manifest: Manifest, thresholds: np.ndarray) -> DecodeFn:
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


def ssd_anchors_decoder(
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
