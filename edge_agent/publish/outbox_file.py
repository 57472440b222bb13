"""Opening the outbox's SQLite file (outbox.py): one process per file, WAL, the schema checked,
and a damaged file moved aside (with its WAL) instead of a crash loop."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from typing import Literal

from edge_agent.fsutil import move_aside

#: The outbox's own logger: what happens here is the outbox's story in the log.
log = logging.getLogger("edge_agent.publish.outbox")

#: Written to the file header (PRAGMA user_version / application_id): another program's
#: database, or ours from an incompatible version, is refused and moved aside, not misread.
SCHEMA_VERSION = 1
APPLICATION_ID = 0x45534F42  # "ESOB"
#: The WAL is truncated back to this after a checkpoint; without it, it keeps its peak size.
JOURNAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
#: How long a connection waits for the other's lock (reader vs. checkpoint), s.
BUSY_TIMEOUT_S = 5.0
TABLES = {
    "messages": ["id", "kind", "topic", "payload", "qos", "retain", "created", "size"],
    "drops": ["kind", "n"],
    "meta": ["key", "value"],
}
SCHEMA = f"""
CREATE TABLE messages (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
    created REAL NOT NULL, size INTEGER NOT NULL);
CREATE TABLE drops (kind TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
PRAGMA user_version = {SCHEMA_VERSION};
PRAGMA application_id = {APPLICATION_ID};
"""


class Damaged(Exception):
    """The file is not a usable outbox database (the message says why)."""


class OutboxInUseError(RuntimeError):
    """Another process holds the outbox file: two agents share one state folder."""


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (one transaction per commit).
    return sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )


def take_lock(path: Path) -> int:
    """One process per file: two would send the same rows and collide on ids. The lock's fd
    (closed by the owner at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxInUseError(
            f"outbox {path} is in use by another process (lock {lock}): is a second "
            "agent running with this state_dir? Give each agent its own state_dir"
        ) from None
    return fd


def open_database(
    path: Path, synchronous: Literal["NORMAL", "FULL"]
) -> tuple[sqlite3.Connection, Path | None]:
    """The write connection, and where a damaged file was moved (None if it was fine)."""
    try:
        return _open_checked(path, synchronous), None
    except Damaged as exc:
        reason = str(exc)
    aside = move_aside(path)
    wal = path.with_name(path.name + "-wal")
    if wal.exists():  # the damaged file's last commits: they belong with it
        move_aside(wal)
    # The shared-memory index is rebuilt from the WAL; a stale one must not outlive it.
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    log.error("outbox %s was damaged (%s): moved to %s, starting empty", path, reason, aside)
    return _open_checked(path, synchronous), aside


def _open_checked(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise Damaged("quick_check: " + "; ".join(problems[:3]))
        _check_schema(conn)
    except sqlite3.OperationalError:
        conn.close()  # locked, unreadable, read-only: the environment, not the file
        raise
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        conn.close()
        raise Damaged(str(exc)) from exc
    except Damaged:
        conn.close()
        raise
    if mode != "wal":
        log.warning("outbox %s: journal_mode WAL refused (%s)", path, mode)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    return conn


def _check_schema(conn: sqlite3.Connection) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if not tables and app == 0 and version == 0:
        conn.executescript(SCHEMA)  # a new (or empty) file
        return
    if app != APPLICATION_ID or version != SCHEMA_VERSION:
        raise Damaged(
            f"not an outbox of schema {SCHEMA_VERSION} (application_id {app:#x}, "
            f"user_version {version})"
        )
    for table, columns in TABLES.items():
        got = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        if got != columns:
            raise Damaged(f"table {table} has columns {got}, expected {columns}")
