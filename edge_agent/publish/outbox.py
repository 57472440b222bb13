"""The durable outbox: every message waits in SQLite until the broker acknowledges it.

A device's broker link comes and goes; results made meanwhile must survive, in order, and a
crash or a full disk must not take the pipeline down with them. So ``put`` only appends to a
list in memory (it runs on the pipeline's post thread), and a writer thread commits that list
at most every ``commit_interval_s`` in one transaction (group commit: one WAL append a second,
not one per result). The sender reads ``pending`` (committed or not) and ``ack``s what the
broker confirmed; acknowledged rows are deleted at the next commit, so a crash in between sends
them again (QoS 1 is at least once anyway; consumers de-duplicate by ``(run, source, seq)``).

Durability: WAL with ``synchronous=NORMAL`` by default here (the agent's config asks for FULL,
``mqtt.outbox.synchronous``). A commit is in the WAL file when it returns, so a
process crash (SIGKILL, OOM killer) loses only what was not committed yet (at most one
interval). NORMAL fsyncs only at checkpoints, so a power cut may also lose commits the kernel
had not written back yet; the database itself stays consistent either way
(https://www.sqlite.org/pragma.html#pragma_synchronous). FULL (an fsync per commit) is
available for devices on a UPS-less power rail that prefer SD-card wear to losing seconds.

Bounds: payload + topic bytes above ``max_bytes``, or entries older than ``max_age_s``, are
dropped oldest first, whatever their kind, and counted per kind (``drops``/``take_drops``,
persisted). A damaged file is moved aside (``fsutil.move_aside``) and a fresh one made.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

from edge_agent.publish.outbox_file import OutboxInUseError, connect, open_database, take_lock

__all__ = ["Entry", "Outbox", "OutboxInUseError"]

log = logging.getLogger(__name__)

QOS_LEVELS = (0, 1, 2)
#: Uncommitted entries kept in memory at most (and ``max_bytes`` if smaller): while the disk
#: refuses writes, the queue must not take the memory of a 512 MB device. ~1 s of results
#: normally sits there: 2 MB at 2,000 results/s of 1 KB.
DEFAULT_MAX_MEMORY_BYTES = 32 * 1024**2
#: Ids per DELETE ... IN (...): below SQLite's default limit of bound variables.
SQL_VARIABLES_PER_STATEMENT = 500
_COLUMNS = "id, kind, topic, payload, qos, retain, created"


@dataclass(frozen=True, slots=True)
class Entry:
    """One queued message; ``id`` increases with every put, across restarts: the send order."""

    id: int
    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float


def _size(entry: Entry) -> int:
    return len(entry.payload) + len(entry.topic.encode())


class Outbox:
    """A disk queue of MQTT messages; thread-safe. See the module docstring and docs/outbox.md.

    Opens (or creates) the database and starts the writer thread ``outbox-writer``; ``close()``
    commits what is left and stops it. ``recovered_from`` is where a damaged file was moved,
    ``last_commit_error`` the error of the last failed commit (None once one succeeds).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        commit_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be above 0, got {max_bytes!r}")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be above 0 s, got {max_age_s!r}")
        if not commit_interval_s > 0:
            raise ValueError(f"commit_interval_s must be above 0 s, got {commit_interval_s!r}")
        if max_memory_bytes <= 0:
            raise ValueError(f"max_memory_bytes must be above 0, got {max_memory_bytes!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_memory_bytes = min(max_bytes, max_memory_bytes)
        self.commit_interval_s = commit_interval_s
        self._clock = clock
        self.recovered_from: Path | None = None
        self.last_commit_error: str | None = None
        self._lock = threading.Lock()  # the in-memory state below
        self._db_lock = threading.Lock()  # the write connection (commit, take_drops, close)
        self._read_lock = threading.Lock()  # the read connection
        self._mem: dict[int, Entry] = {}  # not yet committed, in id order
        self._mem_bytes = 0
        self._handed = 0  # entries up to this id are in the MQTT client's hands (hold)
        self._delete: set[int] = set()  # on disk, acked or dropped: deleted at the next commit
        self._inflight: set[int] = set()  # ids of the commit being written (still in _mem)
        self._drops: Counter[str] = Counter()
        self._drops_version = 0
        self._drops_written = 0
        self._closed = False
        self._conn_open = True
        self._stop = threading.Event()
        self._lock_fd = take_lock(self.path)
        try:
            self._conn, self.recovered_from = open_database(self.path, synchronous)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._reader = connect(self.path)
        self._reader.execute("PRAGMA query_only = 1")
        self._load()
        self._writer = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._writer.start()

    def _load(self) -> None:
        row = self._conn.execute("SELECT count(*), coalesce(sum(size), 0), max(id) FROM messages")
        self._db_count, self._db_bytes, max_id = row.fetchone()
        last = self._conn.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self._next_id = max(max_id or 0, last[0] if last else 0) + 1
        self._drops.update(dict(self._conn.execute("SELECT kind, n FROM drops").fetchall()))

    # -- the API ---------------------------------------------------------------------------

    def put(self, kind: str, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Queue one message and return its id; cheap, never touches the disk."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if qos not in QOS_LEVELS:
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        with self._lock:
            if self._closed:
                raise RuntimeError(f"outbox {self.path} is closed")
            entry = Entry(self._next_id, kind, topic, payload, qos, bool(retain), self._clock())
            self._next_id += 1
            self._mem[entry.id] = entry
            self._mem_bytes += _size(entry)
            if self._mem_bytes > self.max_memory_bytes:  # commits fail: memory stays bounded
                self._drop_mem(lambda e: self._mem_bytes > self.max_memory_bytes)
        return entry.id

    def pending(self, after_id: int, limit: int) -> list[Entry]:
        """The next ``limit`` entries with id > ``after_id``, in id order, committed or not."""
        if limit <= 0:
            return []
        # Memory first, then disk: a commit in between moves rows from memory to disk, so
        # they are seen twice (de-duplicated below), never missed.
        with self._lock:
            mem = list(islice((e for e in self._mem.values() if e.id > after_id), limit))
            skip = set(self._delete)
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit + len(skip)),
            ).fetchall()
        found = {r[0]: Entry(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows}
        found.update((e.id, e) for e in mem)
        return [found[i] for i in sorted(found) if i not in skip][:limit]

    def ack(self, ids: Iterable[int]) -> None:
        """The broker has these: forget them (a row not committed yet never reaches disk)."""
        with self._lock:
            for i in ids:
                entry = self._mem.pop(i, None)
                if entry is not None:
                    self._mem_bytes -= _size(entry)
                if entry is None or i in self._inflight:  # on disk, or about to be
                    self._delete.add(i)

    def hold(self, through_id: int) -> None:
        """Entries up to ``through_id`` are in the MQTT client's hands (the sender's window):
        the bounds never drop them, since they will be sent whatever happens here (so the
        queue may pass ``max_bytes`` by up to one window). 0 releases them all (a new
        client, which holds nothing)."""
        with self._lock:
            self._handed = max(0, int(through_id))

    def drops(self) -> dict[str, int]:
        """Entries dropped for size or age per kind, since the last ``take_drops``."""
        with self._lock:
            return dict(self._drops)

    def take_drops(self) -> dict[str, int]:
        """Return the drop counts and reset them, on disk too (for the ``dropped`` summary)."""
        with self._db_lock:
            with self._lock:
                taken = dict(self._drops)
                self._drops.clear()
                self._drops_version += 1
                version = self._drops_version
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("DELETE FROM drops")
                self._conn.execute("COMMIT")
                self._drops_written = max(self._drops_written, version)
            except sqlite3.Error as exc:  # the next commit writes the reset counts
                self._rollback()
                log.warning("outbox %s: could not reset drop counts (%s)", self.path, exc)
        return taken

    @property
    def depth(self) -> int:
        """Entries not yet acknowledged nor dropped (exact after each commit)."""
        with self._lock:
            on_disk = sum(1 for i in self._delete if i not in self._inflight)
            return max(0, self._db_count + len(self._mem) - on_disk)

    @property
    def bytes(self) -> int:
        """Payload + topic bytes held (rows acked since the last commit still count)."""
        with self._lock:
            return self._db_bytes + self._mem_bytes

    @property
    def oldest_age_s(self) -> float | None:
        """Age of the oldest entry not acknowledged, s; None when empty."""
        with self._lock:
            first = next(iter(self._mem.values()), None)
            skip = set(self._delete)
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, created FROM messages ORDER BY id LIMIT ?", (len(skip) + 1,)
            ).fetchall()
        created = [c for i, c in rows if i not in skip][:1] or ([first.created] if first else [])
        return max(0.0, self._clock() - created[0]) if created else None

    def flush(self) -> None:
        """Commit now (``last_commit_error`` says whether it worked)."""
        self._commit()

    def close(self) -> None:
        """Commit what is left and stop the writer; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._writer.join()
        self._commit()
        if self._mem:  # the final commit failed (a full disk): say what is lost
            log.error("outbox %s closed with %d entries not on disk", self.path, len(self._mem))
        with self._db_lock, self._read_lock:
            self._conn_open = False
            self._reader.close()
            self._conn.close()
            os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.commit_interval_s):
            try:
                self._commit()
            except Exception:  # a bug must not end the thread and leave results in memory
                log.exception("outbox %s: commit failed unexpectedly", self.path)

    def _drop_mem(self, keep_dropping: Callable[[Entry], bool]) -> None:
        """Drop the oldest uncommitted entries while ``keep_dropping``, never one the client
        holds (``hold``); caller holds _lock."""
        for first in list(self._mem.values()):
            if not keep_dropping(first):
                break
            if first.id <= self._handed:
                continue
            del self._mem[first.id]
            self._mem_bytes -= _size(first)
            if first.id in self._inflight:
                self._delete.add(first.id)
            self._drops[first.kind] += 1
            self._drops_version += 1

    def _commit(self) -> None:
        with self._db_lock:
            if not self._conn_open:
                return
            cutoff = self._clock() - self.max_age_s
            with self._lock:
                self._drop_mem(lambda e: e.created < cutoff)
                batch = list(self._mem.values())
                self._inflight = set(self._mem)
                delete = list(self._delete)
                drops = Counter(self._drops)
                version = self._drops_version
                dirty = version != self._drops_written
                last_id = self._next_id - 1
                handed = self._handed
            if not (batch or delete or dirty or self._db_count):
                return
            try:
                deleted, removed, dropped = self._write(
                    batch, delete, cutoff, drops, dirty, last_id, handed
                )
            except sqlite3.Error as exc:
                self._rollback()
                with self._lock:  # acked or dropped while being written, and never written
                    self._delete.difference_update(self._inflight.difference(self._mem))
                    self._inflight = set()
                if self.last_commit_error is None:
                    log.warning(
                        "outbox %s: commit failed, rows stay in memory (%s)", self.path, exc
                    )
                self.last_commit_error = str(exc)
                return
            if self.last_commit_error is not None:
                log.info("outbox %s: commits work again", self.path)
                self.last_commit_error = None
            with self._lock:
                self._delete.difference_update(delete)
                self._db_count += len(batch) - deleted
                self._db_bytes += sum(map(_size, batch)) - removed
                unchanged = self._drops_version == version
                if dropped:
                    self._drops.update(dropped)
                    self._drops_version += 1
                if unchanged:
                    self._drops_written = self._drops_version
                for entry in batch:  # on disk now (those acked meanwhile are in _delete)
                    if self._mem.pop(entry.id, None) is not None:
                        self._mem_bytes -= _size(entry)
                self._inflight = set()

    def _write(
        self,
        batch: list[Entry],
        delete: list[int],
        cutoff: float,
        drops: Counter[str],
        dirty: bool,
        last_id: int,
        handed: int = 0,
    ) -> tuple[int, int, Counter[str]]:
        """One transaction: delete acked rows, enforce the bounds, insert ``batch``.

        Deleting before inserting lets the new rows reuse the freed pages, so a full file or
        disk still moves forward. Returns (rows deleted, their bytes, drops per kind).
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        deleted = removed = 0
        for start in range(0, len(delete), SQL_VARIABLES_PER_STATEMENT):
            chunk = delete[start : start + SQL_VARIABLES_PER_STATEMENT]
            marks = ",".join("?" * len(chunk))
            sizes = conn.execute(
                f"DELETE FROM messages WHERE id IN ({marks}) RETURNING size", chunk
            ).fetchall()
            deleted += len(sizes)
            removed += sum(s for (s,) in sizes)
        # Oldest first (ids follow put order): a run of the table goes, whatever its kind,
        # after the rows the client holds (``handed``: they will be sent anyway).
        room = self.max_bytes - sum(map(_size, batch))
        held = self._db_bytes - removed
        dropped: Counter[str] = Counter()
        last = None
        cursor = conn.execute(
            "SELECT id, kind, size, created FROM messages WHERE id > ? ORDER BY id", (handed,)
        )
        for row_id, kind, size, created in cursor:
            if held <= room and created >= cutoff:
                break
            last, held = row_id, held - size
            deleted, removed = deleted + 1, removed + size
            dropped[kind] += 1
        cursor.close()
        if last is not None:
            conn.execute("DELETE FROM messages WHERE id > ? AND id <= ?", (handed, last))
        conn.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.id, e.kind, e.topic, e.payload, e.qos, int(e.retain), e.created, _size(e))
                for e in batch
            ],
        )
        if batch:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_id', ?)", (last_id,))
        if dirty or dropped:
            conn.execute("DELETE FROM drops")
            conn.executemany("INSERT INTO drops VALUES (?, ?)", (drops + dropped).items())
        conn.execute("COMMIT")
        return deleted, removed, dropped

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # SQLite may have rolled back itself (SQLITE_FULL)
            log.debug("outbox %s: rollback: %s", self.path, exc)
