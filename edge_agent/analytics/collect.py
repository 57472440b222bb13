"""Field data for the next training run, as the ``collect`` stage: frames the model is unsure
about (a score in a band, a track whose label changed, a random sample), kept with the model's
predictions as pre-labels in a COCO dataset under ``<state_dir>/sources/<src>/field/``.

Off unless a source lists it. Caps make it safe to leave on for a year: a rate cap (per hour
and between frames, capture time) and a byte cap (the oldest frames go first). Skips, evictions
and write failures are counted in the stats registry; the first eviction and the first failure
are logged, later ones only counted. ``edge-trainer import-field`` merges the folders of
several devices into one training set (docs/field-data.md).

Pre-labels: a detector's boxes are COCO annotations with ``category_id`` (the bundle's labels,
ids 1..K in label order) and the model's ``score``; a classifier's verdict is in the image
record's ``classification`` (``labels`` decided by the model's thresholds, top ``scores``).
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from edge_agent.analytics.collect_options import CollectOptions
from edge_agent.analytics.collect_policy import HOUR_S, REASONS, Policy, RateCap
from edge_agent.analytics.collect_writer import SCHEMA, FieldSet, FieldSetFull
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.types import Classifications, Detections, Frame, Result

log = logging.getLogger(__name__)

FOLDER = "field"
#: Scores of a classifier's best labels kept in the record: enough to see what it hesitated
#: between, without 1 000 numbers per image for an ImageNet head.
TOP_SCORES = 5
#: Decimals kept for scores.
DECIMALS = 4
#: Boxes narrower or lower than this (pixels) once clipped to the image are not pre-labels.
MIN_BOX_PX = 1.0


def _stamp(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"


def _encode(image: np.ndarray, max_width: int | None, quality: int) -> tuple[bytes, float]:
    """The frame as JPEG, no wider than ``max_width``, and the scale applied."""
    scale = 1.0 if max_width is None else min(1.0, max_width / image.shape[1])
    if scale < 1.0:
        size = (max_width or 0, max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return data.tobytes(), scale


class CollectStage:
    """The ``collect`` stage of one source."""

    name = "collect"
    needs_frame = True

    def __init__(self, options: CollectOptions, context: StageContext) -> None:
        self.options = options
        self.seed = secrets.randbits(32) if options.seed is None else options.seed
        self.policy = Policy(options, self.seed)
        self.rate = RateCap(options.max_per_hour, options.min_interval_s)
        self.source = context.source_id
        self.device = context.device_id or socket.gethostname()  # a chain without an agent
        self.labels = context.labels
        self.fieldset = (
            None
            if context.state_dir is None
            else FieldSet(context.state_dir / FOLDER, options.max_bytes)
        )
        self._opened = False
        key = f"{context.source_id}/{self.name}"
        stats = context.stats
        self.kept = stats.counter("stage", "collect_kept", key)
        self.by_reason = {r: stats.counter("stage", f"collect_kept_{r}", key) for r in REASONS}
        self.skipped_rate = stats.counter("stage", "collect_skipped_rate", key)
        self.skipped_full = stats.counter("stage", "collect_skipped_too_large", key)
        self.evicted = stats.counter("stage", "collect_evicted", key)
        self.errors = stats.counter("stage", "collect_errors", key)
        self.folder_bytes = stats.gauge("stage", "collect_folder_bytes", key)

    def _open(self, fieldset: FieldSet) -> None:
        """At the first frame worth keeping, not in the constructor: a stage's I/O starts with
        its work (and is tried again at the next one if it fails)."""
        fieldset.open(
            {
                "description": f"edgesight field data of {self.device}/{self.source}",
                "version": "1.0",
                "schema": SCHEMA,
                "device": self.device,
                "source": self.source,
            }
        )
        for label in self.labels:
            fieldset.category_id(label)
        if fieldset.orphans_removed:
            log.info(
                "source %s: removed %d image(s) of %s no record named (a crash while writing)",
                self.source,
                fieldset.orphans_removed,
                fieldset.folder,
            )
        times = fieldset.recent_times(-math.inf)
        if times:  # the frames of the last hour before the restart still count
            self.rate.prime(fieldset.recent_times(max(times) - HOUR_S))
        self.folder_bytes.set(fieldset.total_bytes)
        log.debug("source %s: collect sample seed %d", self.source, self.seed)
        self._opened = True

    def process(self, result: Result, frame: Frame | None) -> Result:
        if not result.inferred:  # the motion gate's repeat of older predictions
            return result
        reasons = self.policy.reasons(result)
        if not reasons or frame is None or self.fieldset is None:
            return result
        try:
            if not self._opened:  # before the rate check: it primes the cap
                self._open(self.fieldset)
            if not self.rate.allows(result.ts):
                self.skipped_rate.inc()
                return result
            self._keep(self.fieldset, result, frame, reasons)
        except FieldSetFull as exc:
            if self.skipped_full.inc() == 1:
                log.warning("source %s: %s; such frames are skipped and counted", self.source, exc)
        except (OSError, ValueError, cv2.error) as exc:  # a full disk, a damaged record
            self._failed(f"frame not kept in {self.fieldset.folder}", exc)
        return result

    def _keep(self, fieldset: FieldSet, result: Result, frame: Frame, reasons: list[str]) -> None:
        jpeg, scale = _encode(frame.image, self.options.max_width, self.options.quality)
        height, width = (round(frame.height * scale), round(frame.width * scale))
        for label in result.labels:  # a swapped model may bring new labels
            fieldset.category_id(label)
        record: dict[str, Any] = {
            "file_name": f"{self.device}_{self.source}_{_stamp(result.ts)}_{result.seq:06d}.jpg",
            "width": width,
            "height": height,
            "date_captured": datetime.fromtimestamp(result.ts, UTC).isoformat(),
            "device": self.device,
            "source": self.source,
            "model": result.model,
            "ts": round(result.ts, 3),
            "seq": result.seq,
            "reasons": reasons,
        }
        annotations: list[dict[str, Any]] = []
        predictions = result.predictions
        if isinstance(predictions, Detections):
            size = (width, height)
            annotations = self._boxes(fieldset, predictions, result.labels, scale, size)
        elif isinstance(predictions, Classifications):
            record["classification"] = _classification(predictions, result)
        added = fieldset.add(jpeg, record, annotations)
        self.rate.kept(result.ts)
        self.kept.inc()
        for reason in reasons:
            self.by_reason[reason].inc()
        if added.evicted and self.evicted.inc(added.evicted) == added.evicted:
            log.info(
                "source %s: %s reached max_bytes (%d): the oldest frames are removed to "
                "make room (counted as collect_evicted)",
                self.source,
                fieldset.folder,
                fieldset.max_bytes,
            )
        self.folder_bytes.set(fieldset.total_bytes)

    @staticmethod
    def _boxes(
        fieldset: FieldSet,
        det: Detections,
        labels: list[str],
        scale: float,
        size: tuple[int, int],
    ) -> list[dict[str, Any]]:
        """COCO annotations of the boxes in the stored image's pixels, clipped to it (decoders
        may give boxes past the edge; labelling tools and the trainer refuse those), a box with
        nothing left inside dropped."""
        out = []
        xyxy_all = np.clip(det.xyxy * np.float32(scale), 0, np.array([*size, *size], np.float32))
        for xyxy, score, cls in zip(
            xyxy_all.tolist(), det.confidence.tolist(), det.class_id.tolist(), strict=True
        ):
            x1, y1, x2, y2 = xyxy
            if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
                continue
            label = labels[cls] if 0 <= cls < len(labels) else f"#{cls}"
            w, h = x2 - x1, y2 - y1
            out.append(
                {
                    "category_id": fieldset.category_id(label),
                    "bbox": [round(v, 2) for v in (x1, y1, w, h)],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "score": round(score, DECIMALS),
                }
            )
        return out

    def _failed(self, what: str, exc: Exception) -> None:
        if self.errors.inc() == 1:
            log.warning(
                "source %s: %s (%s); later failures are only counted", self.source, what, exc
            )

    def close(self) -> None:
        pass


def _classification(predictions: Classifications, result: Result) -> dict[str, Any]:
    """A classifier's pre-label: the labels it decided (its thresholds), the top scores."""
    labels = result.labels
    if result.class_thresholds is not None:
        decided = predictions.decided(result.class_thresholds)
    elif predictions.multilabel:
        decided = predictions.scores >= 0.5
    else:
        decided = np.arange(len(predictions.scores)) == int(np.argmax(predictions.scores))
    return {
        "multilabel": predictions.multilabel,
        "labels": [labels[i] for i in np.flatnonzero(decided) if i < len(labels)],
        "scores": {
            labels[i] if i < len(labels) else f"#{i}": round(s, DECIMALS)
            for i, s in predictions.top(TOP_SCORES)
        },
    }


@register_stage("collect", CollectOptions)
def build_collect(options: CollectOptions, context: StageContext) -> CollectStage:
    return CollectStage(options, context)
