"""Track ids that are never reused, not even after a restart or a crash.

Events and line crossings leave the device with a track id; a consumer that stores them must
never see two objects under one id. Writing the last id on every new track would cost a file
write with fsync per object (milliseconds on an SD card), so ids are *reserved in blocks*, the
way database sequences cache values: the file holds the first id not yet reserved, written
before any id of the block is handed out. A crash skips at most the rest of one block; it
never repeats one. Without a state folder (tests, tools) ids start at 1 each run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_agent.fsutil import write_atomic

log = logging.getLogger(__name__)

#: Ids reserved per write of the state file: one write per this many new tracks.
ID_BLOCK = 1000
#: The file in a source's state folder that holds the first unreserved id.
ID_FILE = "track_next_id"


class TrackIds:
    """Hands out positive, increasing int64 ids; ``path`` (optional) persists reservations."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._next: int | None = None  # read lazily: constructors do no I/O
        self._reserved_to = 0  # ids below this are reserved on disk
        self._warned = False

    def _load(self) -> int:
        if self.path is None or not self.path.exists():
            return 1
        text = self.path.read_text(encoding="ascii", errors="replace").strip()
        try:
            first = int(text)
        except ValueError:
            first = 0
        if first < 1:
            # Never silently start over on a corrupt file: say so; ids may repeat old ones.
            log.warning("%s holds %r, not a positive id; track ids start at 1", self.path, text)
            return 1
        return first

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
