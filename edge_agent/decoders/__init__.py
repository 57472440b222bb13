"""Raw model outputs -> Detections or Classifications, as the manifest's decoder says.

A registry maps each manifest ``decoder.type`` to the function that builds its decoder; a new
decoder type is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle.manifest import Manifest
from edge_agent.decoders.classify import classifier_decoder
from edge_agent.decoders.foreign import detections_decoder, yolo_regions_decoder
from edge_agent.decoders.ops import DecodeError, DecodeFn
from edge_agent.decoders.ssd import ssd_anchors_decoder, ssd_boxes_decoder

#: Builds a decoder from its manifest section, the manifest, the per-class thresholds and the
#: bundle folder (for decoder files such as anchors).
Builder = Callable[[Any, Manifest, np.ndarray, Path | None], DecodeFn]

DECODERS: dict[str, Builder] = {
    "softmax": lambda cfg, m, th, _dir: classifier_decoder(cfg, len(m.labels)),
    "sigmoid": lambda cfg, m, th, _dir: classifier_decoder(cfg, len(m.labels)),
    "ssd_boxes": lambda cfg, m, th, _dir: ssd_boxes_decoder(cfg, m, th),
    "ssd_anchors": ssd_anchors_decoder,
    "tflite_detection_postprocess": lambda cfg, m, th, _dir: detections_decoder(cfg, m, th),
    "detections": lambda cfg, m, th, _dir: detections_decoder(cfg, m, th),
    "yolo_regions": lambda cfg, m, th, _dir: yolo_regions_decoder(cfg, m, th),
}

__all__ = ["DECODERS", "DecodeError", "DecodeFn", "build_decoder"]


def build_decoder(
    manifest: Manifest,
    score_override: float | None = None,
    bundle_dir: Path | None = None,
    class_thresholds: np.ndarray | None = None,
) -> DecodeFn:
    """The decode function for this manifest, with thresholds resolved once.

    ``bundle_dir`` is where decoder files (anchors) are read from; ``class_thresholds`` (one
    per label) replace the manifest's and ``score_override`` when given."""
    cfg = manifest.decoder
    try:
        builder = DECODERS[cfg.type]
    except KeyError:
        raise DecodeError(
            f"decoder type {cfg.type!r} is not supported by this agent; it knows {sorted(DECODERS)}"
        ) from None
    if class_thresholds is not None:
        thresholds = np.asarray(class_thresholds, np.float32)
    else:
        thresholds = np.asarray(manifest.class_thresholds(score_override), np.float32)
    return builder(cfg, manifest, thresholds, bundle_dir)
