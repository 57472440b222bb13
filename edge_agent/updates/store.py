"""The on-device model store: ``models/<sha256>/`` bundles and the ``current``/``previous`` links.

Layout under ``state_dir`` (DESIGN.md, on-device state)::

    models/<sha256>/            an unpacked, verified bundle (sha256 of its archive)
    models/<sha256>.complete    written last when staging: the folder is whole
    models/current -> <sha256>  relative symlinks, swapped by rename + folder fsync
    models/previous -> <sha256>
    downloads/<sha256>.part     a download in progress

The completion marker sits beside the folder, not in it: a signed bundle must hold exactly the
files its manifest lists (bundle.signing.check_no_unlisted_files), so a marker inside would make
the staged bundle fail its own verification.

Every step that changes what a restart would see is one rename followed by a folder fsync, and
calls ``crashpoint()`` between steps so a test can SIGKILL the agent there (test_update_crash):
after any of them, ``current`` names a whole folder, the old one or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path

from edge_agent.fsutil import fsync_dir, write_atomic
from edge_agent.updates.crashpoint import crashpoint
from edge_agent.updates.device_state import DeviceState

log = logging.getLogger(__name__)

MODELS = "models"
DOWNLOADS = "downloads"
CURRENT = "current"
PREVIOUS = "previous"
COMPLETE_SUFFIX = ".complete"
PART_SUFFIX = ".part"
TMP_PREFIX = ".tmp-"
#: Owner and group only: bundles may be proprietary models.
DIR_MODE = 0o750
#: Model folders kept by cleanup() besides current and previous (the newest staged first).
KEEP_MODELS = 3
#: Agent starts tolerated during probation before a crash loop rolls back (the boot that swapped
#: the model is not counted: a third restart means the new model is what keeps killing it).
MAX_PROBATION_BOOTS = 2
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Crash points of this module, in order (the updater adds its states: downloading, ...).
CRASHPOINTS = (
    "stage:copied",
    "stage:renamed",
    "stage:complete",
    "activate:start",
    "activate:previous-temp",
    "activate:previous",
    "activate:current-temp",
    "activate:current",
    "rollback:current-temp",
    "rollback:current",
    "rollback:previous",
)


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits (it becomes a file name), else ValueError."""
    if not SHA256_RE.fullmatch(sha256):
        raise ValueError(f"expected a sha256 as 64 lowercase hex digits, got {sha256!r}")
    return sha256


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (bottom-up): then a rename publishes data."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class ModelStore:
    """Model folders and the links naming the running one, under ``state_dir``.

    The constructor creates ``models/`` and ``downloads/`` (mode 0750) if missing: a store
    that cannot be written is an error at start, not in the middle of an update.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.models = self.state_dir / MODELS
        self.downloads = self.state_dir / DOWNLOADS
        self._logged: set[str] = set()
        for folder in (self.models, self.downloads):
            folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def is_complete(self, sha256: str) -> bool:
        """True when ``models/<sha256>/`` is a whole staged folder (its marker exists)."""
        folder = self.models / sha256
        marker = self.models / (sha256 + COMPLETE_SUFFIX)
        return folder.is_dir() and not folder.is_symlink() and marker.is_file()

    def _link_sha(self, name: str) -> str | None:
        """The sha256 ``models/<name>`` points at, if it is a symlink to a complete folder."""
        link = self.models / name
        if not link.is_symlink():
            if link.exists():
                self._warn(f"{link} is not a symlink; ignored")
            return None
        target = os.readlink(link)
        if not SHA256_RE.fullmatch(target):
            self._warn(f"{link} -> {target}: expected a model folder's sha256 name; ignored")
            return None
        if not self.is_complete(target):
            self._warn(f"{link} -> {target}: the folder is missing or was never completed")
            return None
        return target

    def _warn(self, message: str) -> None:
        if message not in self._logged:  # once per store: current() is asked often
            self._logged.add(message)
            log.warning("model store: %s", message)

    def current_sha256(self) -> str | None:
        return self._link_sha(CURRENT)

    def previous_sha256(self) -> str | None:
        return self._link_sha(PREVIOUS)

    def current(self) -> Path | None:
        """``models/<sha256>/`` of the running model, or None (no link, dangling, partial)."""
        sha = self.current_sha256()
        return None if sha is None else self.models / sha

    def previous(self) -> Path | None:
        """``models/<sha256>/`` of the model before it, or None."""
        sha = self.previous_sha256()
        return None if sha is None else self.models / sha

    def download_path(self, sha256: str) -> Path:
        """Where the archive ``sha256`` is downloaded to (``downloads/<sha256>.part``)."""
        return self.downloads / (check_sha256(sha256) + PART_SUFFIX)

    # -- changing ----------------------------------------------------------------------------

    def stage(self, sha256: str, unpacked: Path) -> Path:
        """Move the verified bundle folder ``unpacked`` in as ``models/<sha256>/``; return it.

        Copied (``unpacked`` may be on another file system) into ``models/.tmp-<sha256>``,
        fsynced, renamed into place, and marked complete last; then ``unpacked`` is removed.
        An already complete folder is kept as it is. ValueError for a bad sha256 or a
        folder holding symlinks; OSError for file system faults.
        """
        check_sha256(sha256)
        unpacked = Path(unpacked)
        if not unpacked.is_dir():
            raise ValueError(f"stage {sha256[:12]}: {unpacked} is not a folder")
        links = [p for p in unpacked.rglob("*") if p.is_symlink()]
        if links:
            raise ValueError(f"stage {sha256[:12]}: {links[0]} is a symlink; a bundle holds none")
        dest = self.models / sha256
        if not self.is_complete(sha256):
            tmp = self.models / (TMP_PREFIX + sha256)
            for leftover in (tmp, dest):
                _remove(leftover)
            shutil.copytree(unpacked, tmp)
            tmp.chmod(DIR_MODE)
            _fsync_tree(tmp)
            crashpoint("stage:copied")
            os.rename(tmp, dest)
            fsync_dir(self.models)
            crashpoint("stage:renamed")
            marker = {"sha256": sha256, "staged": round(time.time(), 3)}
            write_atomic(self.models / (sha256 + COMPLETE_SUFFIX), json.dumps(marker).encode())
            crashpoint("stage:complete")
        shutil.rmtree(unpacked, ignore_errors=True)
        return dest

    def _swap(self, name: str, sha256: str, step: str) -> None:
        """Point ``models/<name>`` at ``sha256``: temp symlink, rename over, folder fsync."""
        tmp = self.models / f".{name}.{secrets.token_hex(8)}.tmp"
        os.symlink(sha256, tmp)
        crashpoint(f"{step}-temp")
        os.replace(tmp, self.models / name)
        fsync_dir(self.models)
        crashpoint(step)

    def activate(self, sha256: str) -> Path:
        """Make the staged ``sha256`` current; the old current becomes previous. Returns the
        folder. ValueError when ``sha256`` is not a complete staged folder."""
        check_sha256(sha256)
        if not self.is_complete(sha256):
            raise ValueError(f"activate {sha256[:12]}: models/{sha256} is not a complete folder")
        crashpoint("activate:start")
        old = self.current_sha256()
        if old == sha256:
            return self.models / sha256
        if old is not None:
            self._swap(PREVIOUS, old, "activate:previous")
        self._swap(CURRENT, sha256, "activate:current")
        return self.models / sha256

    def rollback(self) -> Path | None:
        """current := previous, and previous is removed (so a second rollback cannot return
        to the model just left). Returns the new current folder, or None (no previous)."""
        prev = self.previous_sha256()
        if prev is None:
            return None
        self._swap(CURRENT, prev, "rollback:current")
        (self.models / PREVIOUS).unlink(missing_ok=True)
        fsync_dir(self.models)
        crashpoint("rollback:previous")
        return self.models / prev

    # -- at start ----------------------------------------------------------------------------

    def cleanup(self, keep: int = KEEP_MODELS) -> list[str]:
        """Remove what an interrupted update left, and old models; return what was removed.

        Partial downloads, ``.tmp-*`` copies, temp links, model folders never completed (and
        markers without a folder), and complete folders beyond the newest ``keep`` that are
        neither current nor previous. Entries it does not know are left alone.
        """
        protected = {s for s in (self.current_sha256(), self.previous_sha256()) if s}
        # No download outlives the process: a .part, or a whole archive not yet unpacked.
        removed: list[Path] = [p for p in self.downloads.iterdir() if not p.is_dir()]
        removed += self.models.glob(TMP_PREFIX + "*")
        removed += [p for p in self.models.glob(".*.tmp") if p.is_symlink()]
        complete: list[tuple[float, str]] = []
        for entry in self.models.iterdir():
            name = entry.name.removesuffix(COMPLETE_SUFFIX)
            if not SHA256_RE.fullmatch(name) or entry.is_symlink():
                continue
            if entry.name.endswith(COMPLETE_SUFFIX):
                if not (self.models / name).is_dir():
                    removed.append(entry)
            elif not self.is_complete(name):
                if name not in protected:
                    removed.append(entry)
            else:
                marker = self.models / (name + COMPLETE_SUFFIX)
                complete.append((marker.stat().st_mtime, name))
        for _mtime, name in sorted(complete, reverse=True)[keep:]:
            if name not in protected:
                removed += [self.models / (name + COMPLETE_SUFFIX), self.models / name]
        for path in removed:  # the marker of an old model goes first: never a marked half
            _remove(path)
        if removed:
            fsync_dir(self.models)
            fsync_dir(self.downloads)
        return [str(p.relative_to(self.state_dir)) for p in removed]

    def recover(self, state: DeviceState) -> str | None:
        """Decide the outcome of the update a crash interrupted (``state.pending``), or None.

        Not yet swapped in (current is not the pending sha256): the old model stays and the
        bundle is recorded as rejected, so a bundle that kills the agent is not retried for
        ever. Swapped in (a crash during probation): one more boot is counted; past
        MAX_PROBATION_BOOTS the previous model is restored. Returns words for the log and
        the model topic, starting with the resulting state.
        """
        pending = state.pending
        if pending is None:
            return None
        loop = "crash loop during probation"
        if self.current_sha256() != pending.sha256:
            # A boot count past the limit means a rollback had begun: it got as far as current.
            rolled_back = pending.boots > MAX_PROBATION_BOOTS
            reason = loop if rolled_back else f"interrupted at {pending.state}"
            state.mark_rejected(pending.sha256, reason)
            state.clear_pending()
            return f"{'rolled_back' if rolled_back else 'rejected'}: {reason}"
        boots = pending.boots + 1
        state.set_pending(replace(pending, boots=boots))  # before the rollback: see above
        if boots <= MAX_PROBATION_BOOTS:
            return (f"{pending.state}: restarted during probation "
                    f"({boots} of {MAX_PROBATION_BOOTS} restarts allowed)")  # fmt: skip
        if self.rollback() is None:
            return f"{pending.state}: {loop}, but there is no previous model to roll back to"
        state.mark_rejected(pending.sha256, loop)
        state.clear_pending()
        return f"rolled_back: {loop}"
