"""Track ids that are never reused, not even after a restart or a crash.

Events and line crossings leave the device with a track id; a consumer that stores them must
never see two objects under one id. Writing the last id on every new track would cost a file
write with fsync per object (milliseconds on an SD card), so ids are *reserved in blocks*, the
way database sequences cache values: the file holds the first id not yet reserved, written
before any id of the block is handed out. A crash skips at most the rest of one block; it
never repeats one. Without a state folder (tests, tools) ids start at 1 each run.

A file that cannot be read as a positive id (damaged, edited by hand) is moved aside and
logged as an error, and ids start again at a floor no earlier run can have reached: the
milliseconds since the epoch, of now or of the damaged file's last change if that is later (a
device without a real-time clock may boot in 1970). An earlier run counted up from 1, or from
such a floor, one id per new track: to reach the new floor it would have had to start more
than one track per millisecond, on average, ever since. Such ids (about 1.7e12 in 2024) stay
far below 2**53, so JSON readers that hold numbers as doubles still read them exactly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edge_agent.fsutil import move_aside, write_atomic

log = logging.getLogger(__name__)

#: Ids reserved per write of the state file: one write per this many new tracks.
ID_BLOCK = 1000
#: The file in a source's state folder that holds the first unreserved id.
ID_FILE = "track_next_id"
#: Ids per second of the clock floor ids restart at after a damaged file (module docstring).
FLOOR_IDS_PER_S = 1000
#: Ids stay below this: JSON readers that hold numbers as doubles read every id exactly.
MAX_ID = 2**53
#: Characters of a damaged file quoted in the log (it may be any size).
LOGGED_CHARS = 40


class TrackIds:
    """Hands out positive, increasing int64 ids; ``path`` (optional) persists reservations."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._next: int | None = None  # read lazily: constructors do no I/O
        self._reserved_to = 0  # ids below this are reserved on disk
        self._warned = False

    def _load(self) -> int:
        path = self.path
        if path is None or not path.exists():
            return 1
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
            changed_s = path.stat().st_mtime
        except OSError as exc:
            text, changed_s = f"<unreadable: {exc}>", 0.0
        try:
            first = int(text)
        except ValueError:
            first = 0
        if 1 <= first < MAX_ID:
            return first
        floor = int(max(time.time(), changed_s) * FLOOR_IDS_PER_S)
        try:
            aside = move_aside(path).name
        except OSError as exc:
            aside = f"nowhere ({exc}): it will be replaced"
        log.error(
            "%s holds %r, not an id from 1 to 2**53; moved to %s, track ids start at %d (the "
            "clock in ms, above any earlier run's)",
            path,
            text[:LOGGED_CHARS],
            aside,
            floor,
        )
        return floor

    def take(self, count: int) -> np.ndarray:
        """``count`` new ids, in increasing order."""
        if self._next is None:
            self._next = self._reserved_to = self._load()
        first = self._next
        self._next += count
        if self.path is not None and self._next > self._reserved_to:
            self._reserve(self.path, self._next + ID_BLOCK)
        return np.arange(first, first + count, dtype=np.int64)

    def _reserve(self, path: Path, upto: int) -> None:
        """Write ``upto`` as the first unreserved id. A failing disk is an environment fault:
        tracking goes on (ids stay unique in this run), warned once, retried a block later."""
        self._reserved_to = upto
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, f"{upto}\n".encode("ascii"))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot reserve track ids in %s (%s): ids may repeat after a restart", path, exc
                )
