"""What the events stage keeps of an image-folder source for its exports: one record per image
the model saw, the sequences that ended, and the images that never became a result.

The folder source skips a file it cannot decode (and the agent drops a frame that fails
inference) before any stage sees it, so such files are found here: a listed file before the
last one processed that has no record, and at the end as many of the files after it as the
source counted failures. The exports are rewritten whole (a crash leaves the previous ones),
on the agent's post thread, which inference waits for: a rewrite costs time in proportion to
the folder, so while images are processed they are rewritten at most every
``export_every_s`` and at most 1/EXPORT_BACKOFF of the time (export_wait); always when the
folder is done and at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.analytics.camtrap import PACKAGE_LINK, PackageInput, PackageWriter, Unreadable
from edge_agent.analytics.megadetector import Categories, batch_output, write_batch_output
from edge_agent.capture_time import file_capture_time
from edge_agent.health.stats import SourceMetrics
from edge_agent.types import Detections, Result

if TYPE_CHECKING:
    from edge_agent.analytics.event_options import EventsOptions
    from edge_agent.analytics.events import SequenceRecord

log = logging.getLogger(__name__)

MEGADETECTOR_FILE = "megadetector.json"
#: A periodic rewrite that took d seconds waits at least this many times d before the next:
#: exports then take at most ~5 % of the post thread (a 10,000-image folder takes 0.6 s per
#: rewrite here, several times that on a Pi; every 30 s would grow quadratically).
EXPORT_BACKOFF = 20.0


def export_wait(every_s: float, took_s: float) -> float:
    """Seconds from the end of a rewrite that took ``took_s`` to the next periodic one."""
    return max(every_s, EXPORT_BACKOFF * took_s)


@dataclass(eq=False, slots=True)
class MediaRecord:
    """One processed image: every box (normalised left, top, width, height), which ones the
    events stage counted, and the sequence they belong to."""

    file: str
    ts: float
    names: Sequence[str]  # the model's labels when the image was processed
    class_id: np.ndarray
    conf: np.ndarray
    boxes: np.ndarray
    counted: np.ndarray
    tracks: np.ndarray | None
    sequence: str | None
    model: str
    classified_at: float

    @classmethod
    def of(
        cls, result: Result, det: Detections, counted: np.ndarray, sequence: str | None
    ) -> MediaRecord:
        width, height = result.frame_size
        return cls(
            result.origin,
            result.ts,
            result.labels,
            det.class_id.copy(),  # a later stage may reuse the arrays
            det.confidence.copy(),
            det.to_custom_vision_boxes(width, height),
            counted,
            None if det.tracker_id is None else det.tracker_id.copy(),
            sequence,
            result.model,
            time.time(),
        )

    def label(self, i: int) -> str:
        return self.names[int(self.class_id[i])]

    def counted_indices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.counted)]


class FolderLog:
    """One folder source's records and ended sequences, and the writing of its exports."""

    def __init__(
        self,
        folder: Path,
        out_dir: Path | None,
        options: EventsOptions,
        source_id: str,
        metrics: SourceMetrics,
        labels: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.out_dir = out_dir
        self.o = options
        self.source_id = source_id
        self.metrics = metrics
        self.categories = Categories(labels)
        self.package = None if out_dir is None else PackageWriter(out_dir)
        self.records: dict[str, MediaRecord] = {}
        self.sequences: dict[str, SequenceRecord] = {}  # by id: a folder read twice replaces
        self._listing: list[str] | None = None
        self._index: dict[str, int] = {}
        self._last = -1  # listing index of the furthest image processed
        self._dirty = False
        self._clock = clock
        self._due_at = -float("inf")  # clock time of the next periodic rewrite
        self._final: list[str] | None = None  # failures of the last final write, if unchanged
        self._told_camtrap = False
        self._told_where = False

    def listing(self) -> list[str]:
        """The folder's images as the source reads them, listed on first use (as the source
        listed them at start)."""
        if self._listing is None:
            from edge_agent.sources import list_images  # cv2 only for folder sources

            self._listing = [p.name for p in list_images(self.folder)]
            self._index = {name: i for i, name in enumerate(self._listing)}
        return self._listing

    @property
    def exporting(self) -> bool:
        return self.out_dir is not None

    def add(self, record: MediaRecord) -> None:
        self.listing()
        self.records[record.file] = record
        self._last = max(self._last, self._index.get(record.file, -1))
        self._dirty = True
        self._final = None

    def is_last(self, file: str) -> bool:
        listing = self.listing()
        return bool(listing) and file == listing[-1]

    def ended(self, sequence: SequenceRecord) -> None:
        self.sequences[sequence.id] = sequence
        self._dirty = True
        self._final = None

    def failures(self, final: bool) -> list[str]:
        """Listed images with no record: those before the furthest processed, and at the end
        as many after it as the source counted as unreadable or failed."""
        listing = self.listing()
        missing = [f for f in listing[: self._last + 1] if f not in self.records]
        if final:
            failed = self.metrics.frames_corrupt.value + self.metrics.errors.value
            after = [f for f in listing[self._last + 1 :] if f not in self.records]
            missing += after[: max(0, failed - len(missing))]
        return missing

    def write_if_due(self) -> None:
        if self._dirty and self._clock() >= self._due_at:
            self.write(final=False)

    def write(self, final: bool) -> None:
        """Rewrite the exports (no-op without an export folder or anything new). They describe
        this run: a restart reads the folder again from its first image. A final write always
        happens, unless the last one was final with nothing new since."""
        if self.out_dir is None or not (self._dirty or final):
            return
        failures = self.failures(final)
        if not self.records and not failures:  # stopped before the first image: keep the last
            return
        if final and not self._dirty and self._final == failures:
            return
        started = self._clock()
        try:
            self._write(self.out_dir, failures)
        finally:  # also after a failed write: no retry every frame
            ended = self._clock()
            self._due_at = ended + export_wait(self.o.export_every_s, ended - started)
        self._final = failures if final else None

    def _write(self, out_dir: Path, failures: list[str]) -> None:
        index = self._index

        def order(file: str) -> int:  # a file no longer listed: after the listed ones
            return index.get(file, len(index))

        records = sorted(self.records.values(), key=lambda r: order(r.file))
        detector = records[-1].model if records else ""
        output = batch_output(records, failures, self.categories, detector, datetime.now(), order)
        write_batch_output(out_dir / MEGADETECTOR_FILE, output)
        self._dirty = False
        camtrap = self.o.camtrap
        if camtrap.enabled and self.package is not None:
            unreadable = [Unreadable(f, self._time_of(f)) for f in failures]
            ended = sorted(self.sequences.values(), key=lambda s: s.start)
            data = PackageInput(self.source_id, self.folder, records, ended, unreadable)
            self.package.write(camtrap, data)
        elif not self._told_camtrap:
            self._told_camtrap = True
            log.info(
                "source %s: no Camtrap DP package: events.camtrap.latitude and longitude "
                "are not set (Camtrap DP 1.0 requires them)",
                self.source_id,
            )
        if not self._told_where:  # once: where to find them, which nothing else tells
            self._told_where = True
            files = MEGADETECTOR_FILE + (f", {PACKAGE_LINK}/" if camtrap.enabled else "")
            log.info(
                "source %s: camera-trap exports in %s (%s)", self.source_id, self.out_dir, files
            )

    def _time_of(self, name: str) -> float | None:
        """An unreadable file's capture time for media.csv; None when it is gone. A failing
        EXIF parse gives its file time: one odd header must not stop the exports."""
        path = self.folder / name
        try:
            return file_capture_time(path).ts
        except OSError:
            return None
        except Exception:
            log.warning(
                "source %s: reading the capture time of %s failed: using its file time",
                self.source_id,
                name,
                exc_info=True,
            )
            try:
                return path.stat().st_mtime
            except OSError:
                return None
