"""Crash-safe file updates: atomic write with directory fsync, atomic symlink swap.

A device loses power without warning, so every file the agent keeps (``state.json``, keys,
signatures) and every pointer to a model (``models/current``) changes in one step: a reader,
or the agent after a reboot, sees the old version or the new one, never a mix.

The recipe is the POSIX one: write a temp file in the same folder (a rename is atomic only
within one file system), fsync it, ``rename`` it over the target, then fsync the folder so the
rename itself is on disk. Without that last fsync, ext4 with ``data=ordered`` may come back
after a crash with the old name (https://lwn.net/Articles/457667/, "Ensuring data reaches
disk"). A symlink cannot be changed in place, so a new one is made under a temp name and
renamed over the old: ``rename(2)`` replaces the link itself, never what it points to.

A state file that cannot be read back is never overwritten in place nor deleted: it is moved
aside (``move_aside``) for someone to look at, and the agent starts as without it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

DEFAULT_FILE_MODE = 0o644
#: Random hex characters in a temp symlink's name; two swaps of one link never collide.
TEMP_TOKEN_BYTES = 8
#: Suffixes tried for a damaged file's new name when that second's name is taken already.
MAX_ASIDE_SUFFIX = 100


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: int = DEFAULT_FILE_MODE
) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``path`` in one step when the block ends.

    The temp file (``.<name>.*.tmp`` beside ``path``) gets ``mode`` before any byte is written:
    mkstemp creates it 0600, so a private key is never readable by others, not even for a
    moment. ``mode`` is applied exactly (the umask does not narrow it). If the block raises,
    the temp file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = DEFAULT_FILE_MODE) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new one, never half."""
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def replace_symlink(link: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Point the symlink ``link`` at ``target``, creating it or swapping it in one step.

    ``target`` is stored as given: a relative target resolves from ``link``'s folder, which
    keeps a state folder movable (``models/current -> 3f1c...``). Whether ``target`` exists is
    not checked. ``link`` must be a symlink or absent: a real file or folder there is refused
    with FileExistsError rather than silently replaced.
    """
    link = Path(link)
    if not link.is_symlink() and link.exists():
        raise FileExistsError(
            errno.EEXIST, "not a symlink; expected a symlink to replace, or nothing", str(link)
        )
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 as hex, read in chunks (a bundle's model may not fit in memory twice)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def move_aside(path: str | os.PathLike[str]) -> Path:
    """Rename a damaged file to ``<name>.damaged-<local time>`` beside it (``-2``, ``-3``, ...
    added if that name is taken: an earlier copy is never replaced) and return the new path.
    Raises OSError when it cannot be renamed; the caller logs either outcome, in its words.
    """
    path = Path(path)
    stem = f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    for n in range(1, MAX_ASIDE_SUFFIX + 1):
        aside = path.with_name(stem if n == 1 else f"{stem}-{n}")
        if aside.exists() or aside.is_symlink():
            continue
        path.rename(aside)
        fsync_dir(path.parent)
        return aside
    raise FileExistsError(errno.EEXIST, "no free name to move a damaged file to", str(path))
