"""Fetch a bundle archive whose size and sha256 are known in advance, trusting the server for
nothing else.

The URL comes from an MQTT command or a fleet document, so the server may be slow, cut, lying
or hostile, and the address may point into the LAN the device sits on. Hence: the size and
sha256 the caller pinned decide, never Content-Length; the address is checked before connecting
(netguard.py: no private, loopback, link-local or multicast host, no DNS rebinding); bytes are
counted and capped at ``size``; a read gap or an overall deadline ends a trickle. A cut resumes
with ``Range`` from the ``.part`` file, accepting only a 206 whose Content-Range starts where the
file ends (RFC 9110 14.4); the whole file is hashed at the end whatever happened in between.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from edge_agent.fsutil import fsync_dir, sha256_file
from edge_agent.updates import netguard
from edge_agent.updates.netguard import Retry as _Retry
from edge_agent.updates.netguard import mask_url

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Free space kept beyond the archive: the bundle is unpacked next to it, logs keep growing.
DISK_MARGIN_BYTES = 64 * MIB
CHUNK_BYTES = 64 * 1024
#: Backoff between attempts: short, the deadline bounds the total anyway.
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(Exception):
    """A download that did not produce the pinned bytes; the message names URL and reason."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"download of {mask_url(url)} failed: {reason}")
        self.url = mask_url(url)
        self.reason = reason


class DownloadStopped(DownloadError):
    """``stop`` was set (shutdown): not the bundle's fault; the ``.part`` stays to resume."""


@dataclass(frozen=True)
class FetchPolicy:
    """What a device allows a download to do (from its config)."""

    allow_http: bool = False  # plain http is readable and changeable on the way
    allow_private: bool = False  # LAN, loopback, link-local, multicast hosts
    max_bytes: int = 200 * MIB
    read_gap_s: float = 30.0  # longest wait for the next byte
    deadline_s: float = 1800.0  # the whole download, retries included
    retries: int = 5  # attempts after the first
    cafile: str | None = None  # trust these CAs instead of the system's


class _Body(Protocol):
    def read1(self, n: int = ..., /) -> bytes: ...


def fetch(
    url: str,
    dest: Path,
    *,
    size: int,
    sha256: str,
    policy: FetchPolicy,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (via ``dest.part``) and return ``dest`` once it is exactly
    ``size`` bytes with this ``sha256``. ``dest``'s folder must exist. Raises DownloadError
    (DownloadStopped when ``stop`` is set); a cut, stalled or stopped attempt leaves the
    ``.part`` for the next call to resume, wrong bytes leave nothing. ``progress`` gets the
    byte count so far after every chunk (64 KiB), in the calling thread."""
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    if size <= 0:
        raise ValueError(f"size must be a positive byte count, got {size}")
    if size > policy.max_bytes:
        raise DownloadError(url, f"{size} bytes announced, over the {policy.max_bytes} allowed")
    if refusal := netguard.scheme_refusal(url, policy.allow_http):
        raise DownloadError(url, refusal)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    free = shutil.disk_usage(dest.parent).free
    if free < size - have + DISK_MARGIN_BYTES:
        raise DownloadError(
            url,
            f"not enough free disk in {dest.parent}: {free} bytes free, "
            f"{size - have} needed plus a {DISK_MARGIN_BYTES}-byte margin",
        )
    job = _Job(url, part, size, policy, stop or threading.Event(), progress)
    job.run()
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise DownloadError(url, f"sha256 {got} does not match the expected {sha256}")
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


class _Job:
    """One download's attempts, deadline and stop watcher."""

    def __init__(
        self,
        url: str,
        part: Path,
        size: int,
        policy: FetchPolicy,
        stop: threading.Event,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.url = url
        self.part = part
        self.size = size
        self.policy = policy
        self.stop = stop
        self.progress = progress
        self.deadline = time.monotonic() + policy.deadline_s
        self._live = netguard.LiveSocket()

    def fail(self, reason: str) -> DownloadError:
        return DownloadError(self.url, reason)

    def run(self) -> None:
        """Attempt until the ``.part`` holds ``size`` bytes, retrying what a retry may cure."""
        done = threading.Event()
        watcher = threading.Thread(
            target=self._live.watch, args=(self.stop, done), name="fetch-stop", daemon=True
        )
        watcher.start()
        reason = ""
        try:
            for attempt in range(self.policy.retries + 1):
                self._check_stop()
                try:
                    self._attempt()
                    return
                except OSError as exc:  # our side: the part file cannot be opened or written
                    raise self.fail(f"cannot write {self.part}: {exc.strerror or exc}") from exc
                except _Retry as exc:
                    self._check_stop()
                    reason = str(exc)
                    delay = min(BACKOFF_FIRST_S * 2**attempt, BACKOFF_MAX_S)
                    if attempt == self.policy.retries or time.monotonic() + delay > self.deadline:
                        break
                    log.info(
                        "download of %s: %s; retrying in %.1f s", mask_url(self.url), reason, delay
                    )
                    self.stop.wait(delay)
            raise self.fail(f"{reason} (after {attempt + 1} attempts)")
        finally:
            done.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise DownloadStopped(self.url, "stopped (the agent is shutting down)")

    def _remaining_s(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.fail(
                f"not done within the {self.policy.deadline_s:g} s deadline "
                f"({self._have()} of {self.size} bytes; server trickling?)"
            )
        return left

    def _have(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def _attempt(self) -> None:
        have = self._have()
        if have == self.size:
            return
        if urllib.parse.urlsplit(self.url).scheme.lower() == "file":
            self._copy_file()
            return
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            conn = self._connect(url)
            try:
                location = self._request(conn, url, have)
            finally:
                self._live.hold(None)
                conn.close()
            if location is None:
                return
            url = urllib.parse.urljoin(url, location)
        raise self.fail(f"more than {MAX_REDIRECTS} redirects")

    def _copy_file(self) -> None:
        """A file:// URL: the same counting and cap as HTTP, from byte 0 every time."""
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(self.url).path))
        try:
            src = path.open("rb")
        except OSError as exc:
            raise self.fail(f"cannot read {path}: {exc.strerror or exc}") from exc
        with src, self.part.open("wb") as out:
            self._pump(src, out, 0, "the file")

    def _connect(self, url: str) -> http.client.HTTPConnection:
        try:
            conn = netguard.open_connection(
                url,
                allow_http=self.policy.allow_http,
                allow_private=self.policy.allow_private,
                cafile=self.policy.cafile,
                timeout_s=lambda: min(self.policy.read_gap_s, self._remaining_s()),
            )
        except netguard.Refused as exc:
            raise self.fail(str(exc)) from exc
        self._live.hold(conn.sock)  # the watcher shuts this socket, or has seen stop set already
        if self.stop.is_set():
            conn.close()
            self._check_stop()
        return conn

    def _request(self, conn: http.client.HTTPConnection, url: str, have: int) -> str | None:
        """One GET; returns a redirect's Location, or None once the ``.part`` is complete."""
        parts = urllib.parse.urlsplit(url)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = {"Accept-Encoding": "identity", "User-Agent": "edgesight-agent"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"no answer: {exc or type(exc).__name__}") from exc
        status = resp.status
        if status in REDIRECT_STATUSES and resp.getheader("Location"):
            return resp.getheader("Location")
        if status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status} {resp.reason}")
        if status == 416 and have:
            self.part.unlink()
            raise _Retry(f"HTTP 416 to Range bytes={have}-; starting again from byte 0")
        if status == 200 and have:
            log.info(
                "download of %s: server ignored Range bytes=%d-; restarting from byte 0",
                mask_url(url),
                have,
            )
            have = 0
        elif status == 206 and have:
            self._check_content_range(resp.getheader("Content-Range"), have)
        elif status != 200:
            raise self.fail(f"HTTP {status} {resp.reason}, expected 200 (or 206 to a Range)")
        length = resp.getheader("Content-Length")
        if length is not None and length.strip() != str(self.size - have):
            raise self.fail(
                f"server announced Content-Length {length}, expected {self.size - have} "
                f"(the {self.size} bytes announced, from byte {have})"
            )
        with self.part.open("r+b" if have else "wb") as out:
            out.seek(have)
            out.truncate()
            self._pump(resp, out, have, "the server")
        return None

    def _check_content_range(self, header: str | None, have: int) -> None:
        match = CONTENT_RANGE.match((header or "").strip())
        expected = f"bytes {have}-{self.size - 1}/{self.size}"
        if (match is None or int(match[1]) != have or int(match[2]) != self.size - 1
                or match[3] not in ("*", str(self.size))):  # fmt: skip
            self.part.unlink()
            raise _Retry(f"206 with Content-Range {header!r}, expected {expected!r}; from byte 0")

    def _pump(self, body: _Body, out: BinaryIO, have: int, source: str) -> None:
        """Copy until ``size`` bytes; a read gap, a cut or one byte too many ends it."""
        while have < self.size:
            self._check_stop()
            self._set_timeout()
            try:
                chunk = body.read1(min(CHUNK_BYTES, self.size - have))
            except TimeoutError as exc:
                self._check_stop()
                self._remaining_s()
                raise _Retry(f"no data for {self.policy.read_gap_s:g} s at byte {have}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._check_stop()
                raise _Retry(f"connection cut at byte {have} of {self.size}: {exc!r}") from exc
            if not chunk:
                self._check_stop()
                raise _Retry(f"{source} ended at byte {have} of {self.size}")
            self._write(out, chunk)
            have += len(chunk)
            if self.progress is not None:
                self.progress(have)
        try:
            extra = body.read1(1)
        except (OSError, http.client.HTTPException):
            extra = b""  # the server closed early or stalled after the last byte: we have them
        self._write(out, b"")
        if extra:
            self.part.unlink()
            raise self.fail(f"{source} sent more than the {self.size} bytes announced")

    def _write(self, out: BinaryIO, data: bytes) -> None:
        """Append ``data``, or flush and fsync when it is empty; a full disk frees the part."""
        try:
            if data:
                out.write(data)
            else:
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            self.part.unlink(missing_ok=True)
            raise self.fail(f"cannot write {self.part}: {exc.strerror or exc}") from exc

    def _set_timeout(self) -> None:
        self._live.set_timeout(min(self.policy.read_gap_s, self._remaining_s()))
