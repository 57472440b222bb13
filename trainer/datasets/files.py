"""File helpers shared by the writers: a fresh output directory, unique names, copy or link.

Writers never overwrite: converting into a directory that already holds a dataset would mix two
datasets silently, which is worse than refusing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from trainer.datasets.core import DatasetError

ImageMode = Literal["copy", "hardlink", "symlink"]
IMAGE_MODES: tuple[str, ...] = ("copy", "hardlink", "symlink")


def prepare_output(out: Path) -> Path:
    """Create ``out``; refuse one that exists and is not empty."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: output exists and is not empty: expected a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def place_image(src: Path, dest: Path, mode: ImageMode = "copy") -> None:
    """Put ``src`` at ``dest``: a copy, a hard link (copy across file systems) or a symlink."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        dest.symlink_to(src.resolve())
        return
    if mode == "hardlink":
        try:
            os.link(src, dest)
            return
        except OSError:
            pass  # another file system, or links not supported: fall back to a copy
    shutil.copyfile(src, dest)


class UniqueNames:
    """Hands out file names unique within one folder (case-insensitively, for macOS/Windows).

    Two sources may both hold ``img_001.jpg``; the second becomes ``img_001_1.jpg``.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str) -> str:
        path = Path(name)
        candidate, n = name, 0
        while candidate.lower() in self._taken:
            n += 1
            candidate = f"{path.stem}_{n}{path.suffix}"
        self._taken.add(candidate.lower())
        return candidate


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form when below it, else as given."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def read_class_list(path: Path) -> list[str] | None:
    """Classes from a one-name-per-line file (``classes.txt``), or None when there is none."""
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_class_list(path: Path, classes: list[str]) -> None:
    path.write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")


def check_class_names(classes: list[str], fmt: str, forbidden: str) -> None:
    """Refuse class names a format cannot store (a '/' in a folder name, ';' in the CSV)."""
    bad = [c for c in classes if not c.strip() or any(ch in c for ch in forbidden)]
    if bad:
        raise DatasetError(
            f"class names {bad} cannot be written as {fmt}: expected non-empty names "
            f"without any of {list(forbidden)}"
        )
