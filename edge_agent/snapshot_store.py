"""The on-device folder of event snapshots: a ring of JPEGs capped in bytes, oldest removed first.

Each JPEG is written with ``fsutil.write_atomic``, so a power cut leaves a whole file or none,
never half a JPEG under a snapshot's name. The store lists the folder when it opens, so the cap
holds across restarts, and removes only files named as it names them (``snap_...jpg``, and the
temp files of a write a power cut interrupted): anything else a user keeps there is left alone
and not counted.

Not thread-safe: one store belongs to one source's ``snapshot`` stage, which runs on the agent's
post thread.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.fsutil import write_atomic

log = logging.getLogger(__name__)

#: ``snap_20261202T015245_123Z_low_stock_a1b2c3.jpg``: the capture time in UTC (sorts and reads
#: as a time), why it was taken, and random hex so two snapshots of one millisecond differ.
NAME_FORMAT = "snap_{time}_{reason}_{token}.jpg"
NAME_PATTERN = re.compile(r"snap_\d{8}T\d{6}_\d{3}Z_[a-z0-9_-]{1,32}_[0-9a-f]{6}\.jpg")
#: ``fsutil.atomic_writer``'s temp file for one of our names: ``.<name>.<random>.tmp``.
TEMP_PATTERN = re.compile(r"\.snap_[^/]+\.jpg\.[^/]+\.tmp")
REASON_MAX_CHARS = 32
TOKEN_BYTES = 3
REASON_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def snapshot_name(ts: float, reason: str) -> str:
    """A new file name for a snapshot taken at capture time ``ts`` for ``reason``."""
    try:
        when = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):  # not a time: the name still sorts and works
        when = datetime.fromtimestamp(0, UTC)
    text = when.strftime("%Y%m%dT%H%M%S") + f"_{when.microsecond // 1000:03d}Z"
    safe = "".join(ch if ch in REASON_CHARS else "_" for ch in reason.lower())
    safe = safe[:REASON_MAX_CHARS] or "snapshot"
    return NAME_FORMAT.format(time=text, reason=safe, token=secrets.token_hex(TOKEN_BYTES))


class SnapshotStore:
    """``folder`` holding at most ``max_bytes`` of snapshots. ``open()`` lists it (``save``
    opens it when first needed); ``save(data, ts, reason)`` writes one and returns its name."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, but got {max_bytes}")
        self.folder = folder
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, int] = OrderedDict()  # name -> bytes, oldest first
        self.total_bytes = 0
        self.removed = 0  # files removed to keep the cap, since start
        self._opened = False

    @property
    def names(self) -> list[str]:
        """The snapshots kept, oldest first."""
        return list(self._files)

    def open(self) -> None:
        """Create the folder, remove the temp files an interrupted write left, and take in the
        snapshots already there, oldest first by modification time; removes the oldest beyond
        the cap (a lowered ``max_bytes``). Raises OSError when the folder cannot be used."""
        self.folder.mkdir(parents=True, exist_ok=True)
        found: list[tuple[int, str, int]] = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if TEMP_PATTERN.fullmatch(entry.name):
                    Path(entry.path).unlink(missing_ok=True)
                elif NAME_PATTERN.fullmatch(entry.name):
                    stat = entry.stat(follow_symlinks=False)
                    found.append((stat.st_mtime_ns, entry.name, stat.st_size))
        found.sort()
        self._files = OrderedDict((name, size) for _, name, size in found)
        self.total_bytes = sum(self._files.values())
        self._opened = True
        self._make_room(0)

    def save(self, data: bytes, ts: float, reason: str) -> str:
        """Write ``data`` as a new snapshot, removing the oldest until it fits; its file name.

        Raises ValueError when ``data`` alone is larger than the cap, OSError when the folder
        cannot be written (disk full, read-only); the files kept stay consistent either way.
        """
        if len(data) > self.max_bytes:
            raise ValueError(
                f"a snapshot of {len(data)} bytes is larger than max_bytes ({self.max_bytes})"
            )
        if not self._opened:
            self.open()
        name = snapshot_name(ts, reason)
        self.total_bytes -= self._files.pop(name, 0)  # the same name: replaced in place
        self._make_room(len(data))
        write_atomic(self.folder / name, data)
        self._files[name] = len(data)
        self.total_bytes += len(data)
        return name

    def _make_room(self, incoming: int) -> None:
        while self._files and self.total_bytes + incoming > self.max_bytes:
            name, size = next(iter(self._files.items()))
            (self.folder / name).unlink(missing_ok=True)  # OSError: kept, and tried again
            del self._files[name]
            self.total_bytes -= size
            self.removed += 1
