"""Bundle archives unpacked once, into a cache folder named by the archive's sha256.

``load_bundle("shelf-v7.tar.gz")`` unpacks the archive safely (archive.py) into
``<cache>/<sha256 of the archive>/`` and loads that folder like any other. The name follows the
content, so the same archive is unpacked once however often the agent restarts, and a new archive
copied over the old path gets a folder of its own. ``extract_bundle_archive`` writes into a temp
folder and renames it into place only when it is complete, so a folder under its final name is
always a whole extraction, never a half one left by a crash.

The name is a cache key, not a proof: the folder sits on the same writable disk as everything
else, so the files' sha256 (and the signature, when keys are configured) are checked on every
load, exactly as for a bundle folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_agent.bundle.archive import SUFFIXES, ArchiveError, extract_bundle_archive
from edge_agent.bundle.manifest import MANIFEST
from edge_agent.fsutil import sha256_file

#: Overrides the cache folder (a systemd unit sets it to a folder under /var/lib/edgesight).
CACHE_ENV = "EDGESIGHT_BUNDLE_CACHE"
#: Under $XDG_CACHE_HOME (or ~/.cache), per the XDG Base Directory specification.
CACHE_SUBDIR = Path("edgesight", "bundles")


@dataclass(frozen=True)
class Unpacked:
    folder: Path  # <cache>/<sha256>/, holding manifest.json
    reused: bool  # True when an earlier load had unpacked it already


def is_archive_name(path: Path) -> bool:
    """True for the names archive.py can unpack: .tar.gz, .tgz or .tar."""
    return path.name.lower().endswith(tuple(SUFFIXES))


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$EDGESIGHT_BUNDLE_CACHE``, else ``$XDG_CACHE_HOME/edgesight/bundles``, else
    ``~/.cache/edgesight/bundles``. A relative XDG_CACHE_HOME is ignored, as the spec says."""
    if value := environ.get(CACHE_ENV):
        return Path(value).expanduser()
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / CACHE_SUBDIR


def _complete(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and (folder / MANIFEST).is_file()


def _remove(path: Path) -> None:
    """Clear the way for an extraction: something we did not unpack sits under the name."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def unpack_cached(archive: Path, cache_dir: Path) -> Unpacked:
    """The cache folder holding ``archive``'s bundle, unpacking it first if needed.

    Raises ArchiveError for an unusable or unsafe archive, OSError for filesystem faults (an
    unreadable archive, a cache folder that cannot be written).
    """
    dest = cache_dir / sha256_file(archive)
    if _complete(dest):
        return Unpacked(dest, reused=True)
    _remove(dest)
    try:
        extract_bundle_archive(archive, dest)
    except (ArchiveError, OSError):
        if _complete(dest):  # another process unpacked the same archive meanwhile
            return Unpacked(dest, reused=True)
        raise
    return Unpacked(dest, reused=False)
