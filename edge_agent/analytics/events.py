"""Camera-trap events, as the ``events`` stage: frames grouped into sequences by capture time,
per sequence and label the most seen in one frame and the number of distinct tracks, told as
MQTT ``event`` start / update / end with the best frame's snapshot; for a folder source, the
MegaDetector batch output and a Camtrap DP package of the whole folder (folder_log.py).

A sequence opens on the first counted box and ends at the first frame more than ``gap_s``
after the last counted box (Wildlife Insights groups pictures 60 s apart the same way), when
it has lasted ``max_sequence_s`` (a feeder or a street never pauses: its end and snapshot
must still go out, and its state stay bounded), when time goes backwards (a folder read
again), when a folder's last image has been processed, or at close. Times are capture times:
EXIF for pictures, media time for video files. The options are in event_options.py.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.analytics.event_options import EventsOptions
from edge_agent.analytics.folder_log import FolderLog, MediaRecord
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.types import UNCONFIRMED, Detections, Frame, Publication, Result, SnapshotRequest

log = logging.getLogger(__name__)

#: Best frames are kept at most this wide or tall (px): one per open event lives in memory.
SNAPSHOT_MAX_SIDE = 1280


@dataclass(frozen=True)
class Best:
    """An event's best frame: the most boxes of its label, then the highest summed
    confidence. Kept downscaled; ``predictions`` are in the kept image's pixels."""

    score: tuple[int, float]
    ts: float
    image: np.ndarray
    predictions: Detections


@dataclass(eq=False)
class Tally:
    """One label in one sequence: what its MQTT event and Camtrap observation tell."""

    event_id: str
    label: str
    model: str
    first_ts: float
    last_ts: float
    max_count: int = 0
    max_conf: float = 0.0
    tracks: set[int] = field(default_factory=set)
    best: Best | None = None
    sent: tuple[int, int] = (0, 0)  # (max_count, unique_count) last published
    sent_ts: float = -math.inf

    def payload(self, kind: str, ts: float) -> dict[str, Any]:
        return {
            "type": kind,
            "id": self.event_id,
            "label": self.label,
            "start": round(self.first_ts, 3),
            "end": round(self.last_ts, 3) if kind == "end" else None,
            "max_count": self.max_count,
            "unique_count": len(self.tracks),
            "snapshot": None,  # the snapshot stage sets the file name
            "ts": round(ts, 3),
        }


@dataclass(eq=False)
class SequenceRecord:
    """Frames less than gap_s apart with counted boxes; ``labels`` in order of first sight."""

    id: str
    start: float
    end: float
    labels: dict[str, Tally] = field(default_factory=dict)
    closed_at: float = 0.0  # device clock when it ended (Camtrap's classificationTimestamp)


def sequence_id(source_id: str, ts: float) -> str:
    """Source and start time to the millisecond (UTC): unique across restarts, and the same
    when a folder is processed again."""
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{source_id}-{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"


def _keep(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A private copy of a frame, no larger than SNAPSHOT_MAX_SIDE, and its scale."""
    scale = min(1.0, SNAPSHOT_MAX_SIDE / max(image.shape[:2]))
    if scale == 1.0:
        return image.copy(), 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


class EventsStage:
    """One source's sequences and events; with a FolderLog, also its exports."""

    name = "events"

    def __init__(self, options: EventsOptions, source_id: str, folder: FolderLog | None) -> None:
        self.o = options
        self.source_id = source_id
        self.needs_frame = options.snapshot
        self.folder = folder
        self._wanted = None if options.labels is None else frozenset(options.labels)
        self._allowed: dict[tuple[str, ...], np.ndarray] = {}
        self._open: SequenceRecord | None = None
        self._last_ts = -math.inf

    def _counted(self, det: Detections, labels: list[str]) -> np.ndarray:
        key = tuple(labels)
        allowed = self._allowed.get(key)
        if allowed is None:
            wanted = self._wanted
            allowed = np.array([wanted is None or label in wanted for label in key] + [False])
            self._allowed[key] = allowed
        classes = np.minimum(det.class_id, len(key))  # an unknown class: the last, never
        return allowed[classes] & (det.confidence >= self.o.min_confidence)

    def process(self, result: Result, frame: Frame | None) -> Result:
        det = result.predictions
        if not isinstance(det, Detections):  # a classifier has no boxes to count
            return result
        ts = result.ts
        open_ = self._open
        if open_ is not None and (
            ts - open_.end > self.o.gap_s
            or ts - open_.start > self.o.max_sequence_s
            or ts < self._last_ts
        ):
            self._end(result)
        self._last_ts = ts
        counted = self._counted(det, result.labels)
        n_counted = np.count_nonzero(counted)
        seen = n_counted > 0
        if seen:
            self._see(result, frame, det, counted, n_counted == len(det))
        if self._open is not None:
            self._send_updates(result)
        if self.folder is not None:
            if self.folder.exporting:
                seq = self._open.id if self._open is not None and seen else None
                self.folder.add(MediaRecord.of(result, det, counted, seq))
            if self.folder.is_last(result.origin):  # the folder is done: so is its last event
                self.finish(result)
            self.folder.write_if_due()
        return result

    def _see(
        self,
        result: Result,
        frame: Frame | None,
        det: Detections,
        counted: np.ndarray,
        every: bool,
    ) -> None:
        """Count this frame's ``counted`` boxes (``every`` box, as most frames: no gathers)."""
        ts = result.ts
        seq = self._open
        if seq is None:
            seq = self._open = SequenceRecord(sequence_id(self.source_id, ts), ts, ts)
        seq.end = ts
        classes, conf, tracks = det.class_id, det.confidence, det.tracker_id
        if not every:
            classes, conf = classes[counted], conf[counted]
            tracks = None if tracks is None else tracks[counted]
        kept: tuple[np.ndarray, float] | None = None
        present = sorted(set(classes.tolist()))
        for c in present:
            mine = classes == c if len(present) > 1 else slice(None)  # one label: every box
            label = result.labels[c]
            tally = seq.labels.get(label)
            new = tally is None
            if tally is None:
                tally = Tally(f"{seq.id}-{label}", label, result.model, ts, ts)
                seq.labels[label] = tally
            mine_conf = conf[mine]
            n = len(mine_conf)
            tally.last_ts = ts
            tally.max_count = max(tally.max_count, n)
            tally.max_conf = max(tally.max_conf, float(mine_conf.max()))
            if tracks is not None:
                mine_tracks = tracks[mine]
                tally.tracks.update(mine_tracks[mine_tracks != UNCONFIRMED].tolist())
            if frame is not None and self.o.snapshot:  # keep the best frame
                score = (n, float(mine_conf.sum()))
                if tally.best is None or score > tally.best.score:
                    if kept is None:
                        kept = _keep(frame.image)
                    image, scale = kept
                    shown = det[counted]
                    shown.xyxy = shown.xyxy * np.float32(scale)
                    tally.best = Best(score, ts, image, shown)
            if new:
                self._send(result, tally, "start")

    def _send(self, result: Result, tally: Tally, kind: str) -> dict[str, Any]:
        payload = tally.payload(kind, result.ts)
        tally.sent = (tally.max_count, len(tally.tracks))
        tally.sent_ts = result.ts
        result.publications.append(Publication("event", (), payload))
        return payload

    def _send_updates(self, result: Result) -> None:
        assert self._open is not None
        for tally in self._open.labels.values():
            changed = (tally.max_count, len(tally.tracks)) != tally.sent
            if changed and result.ts - tally.sent_ts >= self.o.update_every_s:
                self._send(result, tally, "update")

    def finish(self, result: Result) -> Result:
        """End the open sequence in ``result`` and write the final exports: the folder is
        done. The agent calls it when a finite source ends or stops; so does the last image
        of a folder."""
        self._end(result)
        if self.folder is not None:
            self.folder.write(final=True)
        return result

    def _end(self, result: Result) -> Result:
        """End the open sequence in ``result``: an ``end`` per label, each with a snapshot
        request for its best frame."""
        seq, self._open = self._open, None
        if seq is None:
            return result
        seq.closed_at = time.time()
        for tally in seq.labels.values():
            best, tally.best = tally.best, None  # the picture goes to the snapshot stage
            payload = tally.payload("end", result.ts)
            if best is not None:
                result.snapshot_requests.append(
                    SnapshotRequest("event", best.ts, best.image, best.predictions, payload)
                )
            result.publications.append(Publication("event", (), payload))
        if self.folder is not None:
            self.folder.ended(seq)
        return result

    def close(self) -> None:
        seq, self._open = self._open, None
        if seq is not None:
            log.warning(
                "source %s: events %s were still open when the stage closed; their end was "
                "not published (the exports hold them)",
                self.source_id,
                sorted(t.event_id for t in seq.labels.values()),
            )
            seq.closed_at = time.time()
            if self.folder is not None:
                self.folder.ended(seq)
        if self.folder is not None:
            self.folder.write(final=True)


def _export_dir(options: EventsOptions, context: StageContext) -> Path | None:
    path = Path(options.export_dir).expanduser()
    if path.is_absolute():
        return path
    return None if context.state_dir is None else context.state_dir / path


@register_stage("events", EventsOptions, requires=("track",))
def build_events(options: EventsOptions, context: StageContext) -> EventsStage:
    # The image folder of a folder source; StageContext will carry it (None otherwise).
    media_folder = context.media_folder
    if options.export and media_folder is None:
        raise ValueError(
            f"events: export: true needs an image folder source, but source "
            f"{context.source_id!r} is not one (exports list a folder's images)"
        )
    folder = None
    if media_folder is not None:
        out = _export_dir(options, context) if options.export is not False else None
        if options.export and out is None:
            raise ValueError(
                f"events: export_dir {options.export_dir!r} is relative but source "
                f"{context.source_id!r} has no state folder; give an absolute path"
            )
        folder = FolderLog(
            media_folder,
            out,
            options,
            context.source_id,
            context.stats.source(context.source_id),
            context.labels,
        )
    return EventsStage(options, context.source_id, folder)
