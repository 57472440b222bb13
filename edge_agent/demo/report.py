"""What the demo shows while it runs: a live table of counts and annotated frames on disk.

Both are sinks of the agent, fed on its post thread; one that raises is counted in the agent's
stats and logged once, and the agent carries on.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2

from edge_agent.annotate import draw_classifications, draw_detections
from edge_agent.types import Detections, Frame, Result

log = logging.getLogger(__name__)

#: Annotated frames written: every Nth (at 12 fps, 6 a second, about 3 MB for the clip).
ANNOTATE_EVERY_FRAMES = 2
ANNOTATED_PATTERN = "frame_{seq:04d}.jpg"
JPEG_QUALITY = 85
#: Width of the time column and the narrowest count column, characters.
TIME_WIDTH = 6
MIN_COLUMN = 6


@dataclass(frozen=True)
class Row:
    second: int  # the row covers video seconds [second, second + 1)
    counts: dict[str, int]
    gone: int  # running totals since the first row
    came: int


class CountsTable:
    """One row per second of video: per label, the most frequent count among that second's
    frames (so a hand hiding an item for a few frames is not a change), the total, and running
    totals of items gone from view ("out") and come into view ("in") since the first second.

    Frames must arrive in order, as they do from a file source.
    """

    def __init__(self, labels: list[str], fps: float, stream: TextIO | None = None) -> None:
        self.labels = labels
        self.fps = fps
        self.stream = stream or sys.stdout
        self.rows: list[Row] = []
        self._second: int | None = None
        self._seen: dict[str, Counter[int]] = {}
        self._widths = [max(MIN_COLUMN, len(label) + 2) for label in labels]

    def header(self) -> None:
        cells = "".join(f"{lbl:>{w}}" for lbl, w in zip(self.labels, self._widths, strict=True))
        self._print(
            f"{'time':>{TIME_WIDTH}}{cells}{'total':>{MIN_COLUMN + 1}}"
            f"{'out':>{MIN_COLUMN}}{'in':>{MIN_COLUMN}}"
        )

    def add(self, seq: int, counts: dict[str, int]) -> None:
        second = int(seq // self.fps)
        if self._second is not None and second != self._second:
            self._flush()
        self._second = second
        for label in self.labels:
            self._seen.setdefault(label, Counter())[int(counts.get(label, 0))] += 1

    # A sink of the agent (the picture is not needed).
    name = "demo-table"
    needs_frame = False

    def emit(self, result: Result, frame: Frame | None) -> None:
        self.add(result.seq, result.counts)

    def close(self) -> None:
        pass

    def finish(self) -> None:
        """Print the row of the last (possibly partial) second."""
        if self._seen:
            self._flush()

    def _flush(self) -> None:
        # Most frequent count; a tie goes to the larger count.
        counts = {
            label: max(self._seen[label].items(), key=lambda kv: (kv[1], kv[0]))[0]
            for label in self.labels
        }
        gone = came = 0
        if self.rows:
            prev = self.rows[-1]
            gone = prev.gone + sum(max(0, prev.counts[lb] - counts[lb]) for lb in self.labels)
            came = prev.came + sum(max(0, counts[lb] - prev.counts[lb]) for lb in self.labels)
        row = Row(self._second or 0, counts, gone, came)
        self.rows.append(row)
        self._seen = {}
        cells = "".join(
            f"{counts[lbl]:>{w}}" for lbl, w in zip(self.labels, self._widths, strict=True)
        )
        self._print(
            f"{row.second + 1:>{TIME_WIDTH - 1}}s{cells}"
            f"{sum(counts.values()):>{MIN_COLUMN + 1}}{gone:>{MIN_COLUMN}}"
            f"{came:>{MIN_COLUMN}}"
        )

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class AnnotatedFrames:
    """Writes every Nth frame, drawn with its predictions and counts, as a JPEG in ``folder``."""

    def __init__(self, folder: Path, every: int = ANNOTATE_EVERY_FRAMES) -> None:
        self.folder = folder
        self.every = every
        self.written = 0

    def clear(self) -> None:
        """Make the folder, removing frames an earlier run left there (and nothing else)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("frame_*.jpg"):
            old.unlink()

    # A sink of the agent: it needs the picture. Failures are counted by the agent's stats.
    name = "demo-frames"
    needs_frame = True

    def emit(self, result: Result, frame: Frame | None) -> None:
        if result.seq % self.every or frame is None:
            return
        if isinstance(result.predictions, Detections):
            image = draw_detections(frame.image, result.predictions, result.labels, result.counts)
        else:
            image = draw_classifications(frame.image, result.predictions, result.labels)
        path = self.folder / ANNOTATED_PATTERN.format(seq=result.seq)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"{path}: JPEG encoding failed")
        path.write_bytes(data.tobytes())
        self.written += 1

    def close(self) -> None:
        pass
