"""Atomic write and atomic symlink swap: content, mode, and nothing left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_agent import fsutil
from edge_agent.fsutil import (
    atomic_writer,
    fsync_dir,
    move_aside,
    replace_symlink,
    write_atomic,
)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_write_atomic_writes_content_with_the_exact_mode(tmp_path, mode):
    old = os.umask(0o077)  # the umask must not narrow the requested mode
    try:
        write_atomic(tmp_path / "state.json", b'{"version": 3}\n', mode)
    finally:
        os.umask(old)
    assert (tmp_path / "state.json").read_bytes() == b'{"version": 3}\n'
    assert mode_of(tmp_path / "state.json") == mode
    assert names(tmp_path) == ["state.json"]


def test_write_atomic_replaces_an_existing_file_and_its_mode(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"old and longer than the new content")
    path.chmod(0o666)
    write_atomic(path, b"new", 0o600)
    assert path.read_bytes() == b"new"
    assert mode_of(path) == 0o600
    assert names(tmp_path) == ["key"]


def test_the_mode_is_set_before_any_data_is_written(tmp_path, monkeypatch):
    seen = []
    real_fchmod = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        seen.append(("fchmod", os.fstat(fd).st_size))
        real_fchmod(fd, mode)

    monkeypatch.setattr(fsutil.os, "fchmod", fchmod)
    write_atomic(tmp_path / "k", b"secret", 0o600)
    assert seen == [("fchmod", 0)]


def test_an_exception_mid_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(path, 0o644) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["state.json"]


def test_a_failing_fsync_leaves_no_temp_and_no_new_file(tmp_path, monkeypatch):
    def fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "state.json", b"data")
    assert names(tmp_path) == []


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(
        fsutil.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))
    )
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: calls.append(("fsync_dir", Path(p))))
    write_atomic(tmp_path / "f", b"x")
    replace_symlink(tmp_path / "current", "f")
    assert calls == ["replace", ("fsync_dir", tmp_path)] * 2


def test_fsync_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")


def test_symlink_swap_creates_a_link_when_none_exists(tmp_path):
    (tmp_path / "aaa").mkdir()
    replace_symlink(tmp_path / "current", "aaa")
    assert os.readlink(tmp_path / "current") == "aaa"  # stored relative, as given
    assert (tmp_path / "current").resolve() == (tmp_path / "aaa").resolve()
    assert names(tmp_path) == ["aaa", "current"]


def test_symlink_swap_replaces_an_existing_link_in_one_rename(tmp_path, monkeypatch):
    for name in ("aaa", "bbb"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(name)
    replace_symlink(tmp_path / "current", "aaa")
    renames = []
    real_replace = os.replace

    def replace(src, dst) -> None:
        # Just before the swap the old link still stands: a reader never finds no link.
        assert os.readlink(dst) == "aaa"
        renames.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    replace_symlink(tmp_path / "current", "bbb")
    assert len(renames) == 1 and renames[0][1] == "current"
    assert (tmp_path / "current" / "manifest.json").read_text() == "bbb"
    assert (tmp_path / "aaa" / "manifest.json").read_text() == "aaa"  # the old target is kept
    assert names(tmp_path) == ["aaa", "bbb", "current"]


def test_symlink_swap_replaces_a_dangling_link(tmp_path):
    os.symlink("gone", tmp_path / "current")
    replace_symlink(tmp_path / "current", "new")
    assert os.readlink(tmp_path / "current") == "new"


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_symlink_swap_refuses_to_replace_a_real_file_or_folder(tmp_path, kind):
    path = tmp_path / "current"
    path.mkdir() if kind == "folder" else path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="not a symlink"):
        replace_symlink(path, "aaa")
    assert names(tmp_path) == ["current"]
    assert path.is_dir() if kind == "folder" else path.read_bytes() == b"keep me"


def test_a_failed_symlink_swap_leaves_no_temp_link(tmp_path, monkeypatch):
    os.symlink("aaa", tmp_path / "current")

    def replace(src, dst) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsutil.os, "replace", replace)
    with pytest.raises(OSError, match="Input/output"):
        replace_symlink(tmp_path / "current", "bbb")
    assert names(tmp_path) == ["current"]
    assert os.readlink(tmp_path / "current") == "aaa"


def test_move_aside_keeps_every_damaged_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil.time, "strftime", lambda fmt: "20240501T060000")
    for content in (b"first", b"second"):
        (tmp_path / "state.json").write_bytes(content)
        move_aside(tmp_path / "state.json")
    assert names(tmp_path) == [
        "state.json.damaged-20240501T060000",
        "state.json.damaged-20240501T060000-2",
    ]
    assert (tmp_path / "state.json.damaged-20240501T060000").read_bytes() == b"first"
    assert (tmp_path / "state.json.damaged-20240501T060000-2").read_bytes() == b"second"


def test_move_aside_of_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        move_aside(tmp_path / "gone.json")
