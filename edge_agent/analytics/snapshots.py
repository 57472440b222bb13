"""Annotated event snapshots, as the ``snapshot`` stage: the last of a chain, it turns the
``SnapshotRequest``s earlier stages made into JPEGs with every box (label, score, track id),
overlay (zones, lines, slots with their counts) and the counts panel.

Each JPEG is kept in ``<state_dir>/sources/<src>/snapshots/`` (a ring capped in bytes,
snapshot_store.py), its file name set in the event that asked for it, and the latest one of a
frame published retained on ``<src>/snapshot``. A snapshot that cannot be written (a full disk)
is logged once and counted; it is still published and the chain goes on.
"""

from __future__ import annotations

import logging
import re

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.analytics.counting import frame_counts
from edge_agent.annotate import draw_classifications, draw_detections, draw_overlays
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.snapshot_store import SnapshotStore
from edge_agent.types import (
    Classifications,
    Detections,
    Frame,
    Overlay,
    Publication,
    Result,
    SnapshotRequest,
)

log = logging.getLogger(__name__)

#: 50 MB holds about 300 snapshots of 1280 px at quality 85 (150-200 kB each).
DEFAULT_MAX_BYTES = 50_000_000
#: Below 1 MB a few large frames would not fit; past 100 GB it is a unit mistake.
MIN_MAX_BYTES = 1_000_000
MAX_MAX_BYTES = 100_000_000_000
DEFAULT_QUALITY = 85
#: Wide enough to read a label on a shelf, small enough to send over a cellular link.
DEFAULT_MAX_WIDTH = 1280
MIN_WIDTH = 160
MAX_WIDTH = 7680
REASON = re.compile(r"[a-z0-9_]+")


class SnapshotOptions(BaseModel):
    """Annotated JPEGs of the frames events ask for, kept in a folder capped in bytes and the
    latest published retained on ``<src>/snapshot``; put it last in a chain (docs/shelves.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=MIN_MAX_BYTES,
        le=MAX_MAX_BYTES,
        description="Bytes of snapshots the source's snapshots/ folder keeps under the agent's "
        "state_dir; the oldest are removed first.",
    )
    quality: int = Field(DEFAULT_QUALITY, ge=1, le=100, description="JPEG quality, 1 to 100.")
    max_width: int = Field(
        DEFAULT_MAX_WIDTH,
        ge=MIN_WIDTH,
        le=MAX_WIDTH,
        description="Wider frames are scaled down to this width (pixels) before drawing.",
    )
    on: list[str] | None = Field(
        None,
        min_length=1,
        description="Which requests to honour, by reason (an event type such as "
        "out_of_stock); null: all of them.",
    )
    publish: bool = Field(True, description="Publish the latest snapshot on <src>/snapshot.")
    save: bool = Field(True, description="Keep snapshots in the snapshots/ folder.")

    @field_validator("on")
    @classmethod
    def _reasons(cls, value: list[str] | None) -> list[str] | None:
        for reason in value or []:
            if not REASON.fullmatch(reason):
                raise ValueError(
                    f"each reason must be lower-case letters, digits and '_' (an event type "
                    f"such as out_of_stock), but got {reason!r}"
                )
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"reasons must not repeat, but got {value}")
        return value


def render(
    image: np.ndarray,
    predictions: Detections | Classifications | None,
    labels: list[str],
    counts: dict[str, int] | None,
    overlays: list[Overlay],
    max_width: int,
    quality: int,
) -> bytes:
    """One annotated JPEG: the image scaled down to ``max_width``, the overlays under the
    boxes, the counts panel on top."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:  # INTER_AREA: no aliasing on a downscale
        size = (max_width, max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    out = draw_overlays(image, overlays)
    if isinstance(predictions, Detections):
        scaled = Detections(
            predictions.xyxy * np.float32(scale),
            predictions.confidence,
            predictions.class_id,
            predictions.tracker_id,
        )
        out = draw_detections(out, scaled, labels, counts or None)
    elif isinstance(predictions, Classifications):
        out = draw_classifications(out, predictions, labels)
    ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {out.shape}")
    return data.tobytes()


class Snapshots:
    """The ``snapshot`` stage of one source."""

    name = "snapshot"
    needs_frame = True

    def __init__(self, options: SnapshotOptions, context: StageContext) -> None:
        self.options = options
        folder = None if context.state_dir is None else context.state_dir / "snapshots"
        self.store = (
            None if folder is None or not options.save else SnapshotStore(folder, options.max_bytes)
        )
        self._on = None if options.on is None else frozenset(options.on)
        key = f"{context.source_id}/{self.name}"
        stats = context.stats
        self.written = stats.counter("stage", "snapshots_written", key)
        self.removed = stats.counter("stage", "snapshots_removed", key)
        self.errors = stats.counter("stage", "snapshot_errors", key)  # not drawn or not kept
        self.no_picture = stats.counter("stage", "snapshots_without_picture", key)
        self.folder_bytes = stats.gauge("stage", "snapshot_folder_bytes", key)
        self._source = context.source_id

    def process(self, result: Result, frame: Frame | None) -> Result:
        wanted = [r for r in result.snapshot_requests if self._on is None or r.reason in self._on]
        latest: tuple[float, bytes] | None = None
        this_frame: tuple[bytes, str | None] | None = None  # drawn once for every request
        for request in wanted:
            if request.image is None and frame is None:  # a chain built without the agent
                self.no_picture.inc()
                continue
            if request.image is None and this_frame is not None:
                jpeg, name = this_frame
            else:
                try:
                    jpeg = self._render(request, result, frame)
                except (ValueError, cv2.error) as exc:  # a kept image or boxes that do not fit
                    self._failed("snapshot not drawn", exc)
                    continue
                name = self._save(jpeg, request)
                if request.image is None:
                    this_frame = (jpeg, name)
            if request.event is not None and name is not None:
                request.event["snapshot"] = name  # the event's publication is this dict
            if latest is None or request.ts >= latest[0]:
                latest = (request.ts, jpeg)
        if latest is not None and self.options.publish:
            result.publications.append(Publication("snapshot", (), latest[1]))
        return result

    def _render(self, request: SnapshotRequest, result: Result, frame: Frame | None) -> bytes:
        """This frame with its result, or a frame a stage kept (an event's best frame) with
        its own boxes and their counts."""
        predictions: Detections | Classifications | None
        if request.image is None:
            assert frame is not None
            image, predictions, counts = frame.image, result.predictions, result.counts
        else:
            image, predictions, counts = request.image, request.predictions, None
            if predictions is not None:
                counts = frame_counts(predictions, result.labels, np.zeros(len(result.labels)))
        options = self.options
        return render(
            image,
            predictions,
            result.labels,
            counts,
            result.overlays,
            options.max_width,
            options.quality,
        )

    def _failed(self, what: str, exc: Exception) -> None:
        """Count a snapshot that failed; log the first failure only."""
        if self.errors.inc() == 1:
            log.warning(
                "source %s: %s (%s); later snapshot failures are only counted",
                self._source,
                what,
                exc,
            )

    def _save(self, jpeg: bytes, request: SnapshotRequest) -> str | None:
        """Keep the JPEG in the folder; its name, or None (no folder, or it failed: counted,
        the first failure logged)."""
        if self.store is None:
            return None
        removed_before = self.store.removed
        try:
            name = self.store.save(jpeg, request.ts, request.reason)
        except (OSError, ValueError) as exc:
            self._failed(f"snapshot not kept in {self.store.folder}, still published", exc)
            return None
        finally:
            self.removed.inc(self.store.removed - removed_before)
            self.folder_bytes.set(self.store.total_bytes)
        self.written.inc()
        return name

    def finish(self, result: Result) -> Result:
        """When the source ends: the snapshots of what earlier stages concluded (an event's
        end with its kept best frame); there is no frame of its own."""
        return self.process(result, None)

    def close(self) -> None:
        pass


@register_stage("snapshot", SnapshotOptions)
def build_snapshot(options: SnapshotOptions, context: StageContext) -> Snapshots:
    return Snapshots(options, context)
