"""Unpack a ``.tar.gz`` / ``.tgz`` / ``.tar`` model bundle safely, all or nothing.

An archive arrives over the network, so it is treated as hostile: every member is checked
(regular files and directories only; no absolute paths, ``..``, links, devices or FIFOs; no name
twice) and the caps are checked on the declared sizes in a first pass that writes nothing. The
second pass extracts with our own code (archive modes, owners and times are ignored) while byte
counters enforce the same caps on the decompressed stream, which also bounds what tarfile itself
reads (a pax header can declare gigabytes). Files go into a fresh temp folder beside ``dest``
that is renamed to ``dest`` only when complete, so a refused archive leaves nothing behind.
``tarfile.data_filter`` runs too, as a second opinion, never as the only check.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, Self, cast

from edge_agent.bundle.manifest import MANIFEST
from edge_agent.fsutil import fsync_dir

MIB = 1 << 20
DEFAULT_MAX_TOTAL_BYTES = 512 * MIB  # all files together; our bundles are tens of MB
DEFAULT_MAX_FILES = 1000  # members of any kind; a bundle holds a handful
DEFAULT_MAX_FILE_BYTES = 256 * MIB  # one file; the largest model we would run on a device
HEADER_ALLOWANCE_BYTES = 64 * 1024  # per member: tar, pax and GNU long-name headers, padding
STREAM_SLACK_BYTES = 1 * MIB  # end-of-archive blocks and record padding
COPY_CHUNK_BYTES = 1 * MIB
FILE_MODE = 0o644  # archive modes are ignored: no setuid bits, nothing world-writable
DIR_MODE = 0o755
#: Archive name endings and the compression each one means.
SUFFIXES = {".tar.gz": "gz", ".tgz": "gz", ".tar": "none"}
ONLY_FILES_AND_DIRS = "expected regular files and directories only"
ONE_PATH_ONE_KIND = "expected each path once, as either a file or a folder"


class ArchiveError(ValueError):
    """The archive is unusable or unsafe; the message names it, the member and what was expected."""


class _HeaderProblem(Exception):
    """A member header that is invalid or truncated, which tarfile would take for the end."""


class _StrictTarInfo(tarfile.TarInfo):
    """Only a zero block ends the archive: tarfile stops silently at a bad header otherwise."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # not in typeshed
            raise  # a zero block: the end-of-archive marker
        except tarfile.HeaderError as exc:
            raise _HeaderProblem(str(exc)) from exc


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _LimitedReader:
    """Decompressed tar stream that refuses to yield more than ``limit`` bytes in total."""

    def __init__(self, raw: _Readable, limit: int, archive: Path) -> None:
        self._raw = raw
        self._limit = limit
        self._archive = archive
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        want = self._limit + 1 - self.count if size < 0 else min(size, self._limit + 1 - self.count)
        data = self._raw.read(max(want, 0))
        self.count += len(data)
        if self.count > self._limit:
            raise ArchiveError(
                f"archive {self._archive}: the tar stream is larger than {self._limit} bytes "
                "(the caps plus header allowance); refusing a possible decompression bomb"
            )
        return data


@dataclass(frozen=True)
class _Caps:
    max_total_bytes: int
    max_files: int
    max_file_bytes: int

    @property
    def stream_bytes(self) -> int:
        """Most decompressed tar bytes an archive within the caps can need."""
        return self.max_total_bytes + self.max_files * HEADER_ALLOWANCE_BYTES + STREAM_SLACK_BYTES


@dataclass
class _Checker:
    """Checks members one by one against the rules and the caps on declared sizes."""

    archive: Path
    caps: _Caps
    members: int = 0
    total_bytes: int = 0
    files: set[tuple[str, ...]] = field(default_factory=set)
    dirs: set[tuple[str, ...]] = field(default_factory=set)
    last: str = ""

    def fail(self, name: str, problem: str) -> ArchiveError:
        return ArchiveError(f"archive {self.archive}: member {name!r}: {problem}")

    def check(self, member: tarfile.TarInfo, scratch: Path) -> tuple[str, ...]:
        """The member's path parts ('.' and empty parts dropped); raises if it is not allowed."""
        name = member.name
        self.members += 1
        self.last = name
        if self.members > self.caps.max_files:
            raise ArchiveError(
                f"archive {self.archive}: more than {self.caps.max_files} members (the cap; "
                "expected a bundle's handful of files)"
            )
        if member.issym() or member.islnk():
            kind = "symlink" if member.issym() else "hardlink"
            raise self.fail(name, f"is a {kind} to {member.linkname!r}; {ONLY_FILES_AND_DIRS}")
        if member.issparse() or not (member.isreg() or member.isdir()):
            raise self.fail(name, f"is a device, FIFO or sparse file; {ONLY_FILES_AND_DIRS}")
        if name.startswith("/"):
            raise self.fail(name, "is an absolute path; expected a path relative to the bundle")
        if "\\" in name:
            raise self.fail(name, "contains '\\'; expected '/' as the only separator")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.fail(name, "has a '..' component; expected a path inside the bundle")
        if not parts and not member.isdir():
            raise self.fail(name, "has an empty name; expected a file name")
        inside = next((parts[:i] for i in range(1, len(parts)) if parts[:i] in self.files), None)
        if inside:
            raise self.fail(name, f"is inside the file {'/'.join(inside)!r}; {ONE_PATH_ONE_KIND}")
        if parts in self.files or (parts in self.dirs and not member.isdir()):
            raise self.fail(name, f"appears twice; {ONE_PATH_ONE_KIND}")
        if member.isdir():
            self.dirs.add(parts)
        else:
            self.files.add(parts)
            self._check_size(name, member.size)
        self._data_filter(member, scratch)
        return parts

    def _check_size(self, name: str, size: int) -> None:
        if size > self.caps.max_file_bytes:
            raise self.fail(
                name,
                f"declares {size} bytes, over the cap of {self.caps.max_file_bytes} bytes per file",
            )
        self.total_bytes += size
        if self.total_bytes > self.caps.max_total_bytes:
            raise self.fail(
                name,
                f"brings the declared total to {self.total_bytes} bytes, "
                f"over the cap of {self.caps.max_total_bytes} bytes",
            )

    def _data_filter(self, member: tarfile.TarInfo, scratch: Path) -> None:
        data_filter = getattr(tarfile, "data_filter", None)  # Python 3.11.4+
        if data_filter is None:
            return
        try:
            data_filter(member, str(scratch))
        except tarfile.FilterError as exc:
            raise self.fail(member.name, f"refused by tarfile.data_filter: {exc}") from exc


def _compression(archive: Path) -> str:
    suffix = next((s for s in SUFFIXES if archive.name.lower().endswith(s)), None)
    if suffix is None:
        raise ArchiveError(
            f"archive {archive}: unsupported file name; expected one ending in "
            f"{', '.join(SUFFIXES)}"
        )
    return SUFFIXES[suffix]


def _open_stream(archive: Path, caps: _Caps) -> tuple[IO[bytes], _LimitedReader]:
    """The archive file (to close) and its decompressed tar stream, capped in bytes."""
    raw = archive.open("rb")
    stream: _Readable = (
        gzip.GzipFile(fileobj=raw, mode="rb") if _compression(archive) == "gz" else raw
    )
    return raw, _LimitedReader(stream, caps.stream_bytes, archive)


def _open_tar(stream: _LimitedReader) -> tarfile.TarFile:
    # Stream mode ("r|") only ever calls read(), so the reader needs no seek() or tell().
    return tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", tarinfo=_StrictTarInfo)


def _bundle_prefix(checker: _Checker) -> tuple[str, ...]:
    """() if manifest.json is at the root, (top,) if everything sits in one folder holding it."""
    if not checker.files:
        raise ArchiveError(f"archive {checker.archive}: holds no files; expected a bundle")
    if (MANIFEST,) in checker.files:
        return ()
    tops = sorted({p[0] for p in checker.files | checker.dirs if p})
    if len(tops) == 1 and (tops[0], MANIFEST) in checker.files:
        return (tops[0],)
    raise ArchiveError(
        f"archive {checker.archive}: expected {MANIFEST} at the root or inside one top-level "
        f"folder, but the top level holds {', '.join(tops[:10])}"
    )


def _copy_member(
    source: IO[bytes], target: Path, member: tarfile.TarInfo, checker: _Checker, written: int
) -> int:
    """Stream one file out, counting bytes against its header and the caps; returns the total."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            size += len(chunk)
            if size > min(member.size, checker.caps.max_file_bytes) or (
                written + size > checker.caps.max_total_bytes
            ):
                raise checker.fail(
                    member.name, "holds more data than its header declares or the caps allow"
                )
            out.write(chunk)
        if size != member.size:
            raise checker.fail(member.name, f"is truncated: {size} of {member.size} bytes")
        out.flush()
        os.fsync(out.fileno())
    return written + size


def _header_error(checker: _Checker, exc: _HeaderProblem) -> ArchiveError:
    where = f"after member {checker.last!r}" if checker.last else "at the start"
    return ArchiveError(
        f"archive {checker.archive}: invalid or truncated member header {where} ({exc}); "
        "expected a complete tar archive"
    )


@contextmanager
def _checked_tar(
    archive: Path, caps: _Caps
) -> Iterator[tuple[_Checker, tarfile.TarFile, _LimitedReader]]:
    """The open archive with a fresh checker; a bad header met anywhere inside the block,
    opening included, becomes an ArchiveError saying after which member."""
    checker = _Checker(archive, caps)
    raw, stream = _open_stream(archive, caps)
    try:
        with raw, _open_tar(stream) as tar:
            yield checker, tar, stream
    except _HeaderProblem as exc:
        raise _header_error(checker, exc) from exc


def _scan(archive: Path, scratch: Path, caps: _Caps) -> _Checker:
    """Pass 1: check every header and the declared sizes; write nothing."""
    with _checked_tar(archive, caps) as (checker, tar, stream):
        for member in tar:
            checker.check(member, scratch)
        while stream.read(COPY_CHUNK_BYTES):  # reach the gzip trailer: its CRC is checked
            pass
    return checker


def _extract(archive: Path, tmp: Path, prefix: tuple[str, ...], caps: _Caps) -> None:
    """Pass 2: check each member again (the file may have changed) and write it into ``tmp``."""
    written = 0
    with _checked_tar(archive, caps) as (checker, tar, _):
        for member in tar:
            parts = checker.check(member, tmp)
            if parts[: len(prefix)] != prefix:
                raise checker.fail(member.name, "changed since the first pass")
            rel = parts[len(prefix) :]
            if not rel:
                continue
            target = tmp.joinpath(*rel)
            if member.isdir():
                target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise checker.fail(member.name, "has no data")
            written = _copy_member(source, target, member, checker, written)


def extract_bundle_archive(
    archive: Path,
    dest: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Path:
    """Extract ``archive`` so that ``dest`` (which must not exist) is the bundle folder.

    The bundle may sit at the archive's root or inside one top-level folder; either way
    ``dest`` ends up holding manifest.json, and ``dest`` is returned. Unsafe or over-cap
    archives raise ArchiveError; filesystem faults (disk full) raise OSError. Either way
    nothing is left behind, except after a crash: callers may delete ``.<name>.extract-*``
    folders in ``dest``'s parent at start-up.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise ArchiveError(
            f"archive {archive}: destination {dest} already exists; expected a new folder"
        )
    kind = "gzip-compressed tar" if _compression(archive) == "gz" else "tar"
    if min(max_total_bytes, max_files, max_file_bytes) < 1:
        raise ValueError("max_total_bytes, max_files and max_file_bytes must be at least 1")
    caps = _Caps(max_total_bytes, max_files, max_file_bytes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        try:
            prefix = _bundle_prefix(_scan(archive, tmp, caps))
            _extract(archive, tmp, prefix, caps)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ArchiveError(
                f"archive {archive}: corrupt or truncated ({type(exc).__name__}: {exc}); "
                f"expected a complete {kind} archive"
            ) from exc
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes it 0700
        fsync_dir(tmp)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)
    return dest
