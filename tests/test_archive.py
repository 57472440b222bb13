"""Safe extraction of bundle archives, and the reproducible ``pack`` command."""

from __future__ import annotations

import argparse
import gzip
import io
import os
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bundle import archive as archive_mod
from edge_agent.bundle import load_bundle, write_manifest
from edge_agent.bundle.archive import ArchiveError, extract_bundle_archive
from edge_agent.bundle.signing import (
    check_no_unlisted_files,
    fingerprint,
    sign_manifest,
    verify_bundle_signature,
)
from trainer.signing_cli import add_signing_commands

MIB = 1 << 20
MANIFEST = b'{"schema": "edgesight.bundle/1"}\n'  # extraction does not parse it
MODEL = b"model bytes"


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def bundle_members(prefix: str = "") -> list[tuple]:
    return [member(f"{prefix}manifest.json", MANIFEST), member(f"{prefix}model.onnx", MODEL)]


def write_tar(path: Path, members: list[tuple]) -> Path:
    """A .tar, or a .tar.gz / .tgz at gzip level 1 (fast for big zero-filled members)."""
    with path.open("wb") as raw:
        gz = (
            None
            if path.suffix == ".tar"
            else gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1)
        )
        with tarfile.open(fileobj=gz or raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in members:
                tar.addfile(info, data)
        if gz is not None:
            gz.close()
    return path


def zeros_tar_gz(path: Path, sizes: dict[str, int]) -> Path:
    """A .tar.gz of zero-filled members, built from gzip members of 1 MiB each.

    Concatenated gzip members are one valid gzip stream (RFC 1952, 2.2), so hundreds of MiB of
    zeros cost a few hundred KiB on disk and no time to compress.
    """
    zero_mib = gzip.compress(bytes(MIB), mtime=0)
    with path.open("wb") as out:
        for name, size in sizes.items():
            assert size % MIB == 0
            info = tarfile.TarInfo(name)
            info.size = size
            out.write(gzip.compress(info.tobuf(tarfile.PAX_FORMAT), mtime=0))
            out.write(zero_mib * (size // MIB))
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """The parent of every extraction; it must hold nothing new after a refused archive."""
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def refused(archive: Path, models: Path, match: str, **caps) -> ArchiveError:
    with pytest.raises(ArchiveError, match=match) as err:
        extract_bundle_archive(archive, models / "b", **caps)
    assert list(models.iterdir()) == [], "a refused archive left something behind"
    assert str(archive) in str(err.value)
    return err.value


@pytest.mark.parametrize("name", ["b.tar.gz", "b.tgz", "b.tar"])
@pytest.mark.parametrize("prefix", ["", "./", "shelf-v7/"])
def test_good_archive_extracts_with_the_bundle_at_dest(tmp_path, models, name, prefix):
    members = [*bundle_members(prefix), member(f"{prefix}aux/anchors.npy", b"anchors")]
    if prefix:
        members.insert(0, member(prefix, kind=tarfile.DIRTYPE))
    archive = write_tar(tmp_path / name, members)
    dest = extract_bundle_archive(archive, models / "b")
    assert dest == models / "b"
    assert (dest / "manifest.json").read_bytes() == MANIFEST
    assert (dest / "model.onnx").read_bytes() == MODEL
    assert (dest / "aux" / "anchors.npy").read_bytes() == b"anchors"
    assert sorted(p.name for p in models.iterdir()) == ["b"]  # no temp folder left


def test_archive_modes_and_owners_are_ignored(tmp_path, models):
    members = [
        member("manifest.json", MANIFEST, mode=0o4777, uid=0, uname="root"),
        member("model.onnx", MODEL, mode=0o2755),
    ]
    dest = extract_bundle_archive(write_tar(tmp_path / "a.tar.gz", members), models / "b")
    for path in (dest / "manifest.json", dest / "model.onnx"):
        assert stat.S_IMODE(path.stat().st_mode) & ~0o644 == 0


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (member("../evil", b"x"), r"member '\.\./evil': has a '\.\.' component"),
        (member("sub/../../evil", b"x"), r"'\.\.' component"),
        (member("/etc/x", b"x"), r"member '/etc/x': is an absolute path"),
        (member("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"), r"is a symlink"),
        (member("hard", kind=tarfile.LNKTYPE, linkname="manifest.json"), r"is a hardlink"),
        (
            member("fifo", kind=tarfile.FIFOTYPE),
            r"member 'fifo': is a device, FIFO or sparse file; expected regular files",
        ),
        (member("tty", kind=tarfile.CHRTYPE, devmajor=5, devminor=0), r"is a device, FIFO"),
        (member("sda", kind=tarfile.BLKTYPE, devmajor=8, devminor=0), r"is a device, FIFO"),
        (member("a\\..\\..\\evil", b"x"), r"contains '\\'"),
        (member("model.onnx", b"second copy"), r"appears twice"),
        (member("model.onnx", kind=tarfile.DIRTYPE), r"appears twice"),
        (member("model.onnx/x", b"x"), r"is inside the file 'model\.onnx'"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, models, bad, expected):
    archive = write_tar(tmp_path / "a.tar.gz", [*bundle_members(), bad])
    message = str(refused(archive, models, expected))
    assert "expected" in message


def test_file_through_a_symlink_is_refused_at_the_symlink(tmp_path, models):
    members = [
        member("out", kind=tarfile.SYMTYPE, linkname=str(tmp_path)),
        member("out/evil", b"x"),
        *bundle_members(),
    ]
    refused(write_tar(tmp_path / "a.tar.gz", members), models, r"member 'out': is a symlink")
    assert not (tmp_path / "evil").exists()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """600 MiB of zeros in one member, a .tar.gz of well under 1 MiB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    return zeros_tar_gz(path, {"manifest.json": 0, "model.onnx": 600 * MIB})


class CountingReader(archive_mod._LimitedReader):
    most = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        CountingReader.most = max(CountingReader.most, self.count)
        return data


def test_big_member_is_refused_on_its_declared_size_without_reading_it(bomb, models, monkeypatch):
    assert bomb.stat().st_size < MIB
    monkeypatch.setattr(archive_mod, "_LimitedReader", CountingReader)
    CountingReader.most = 0
    refused(
        bomb,
        models,
        r"member 'model\.onnx': declares 629145600 bytes, over the cap of "
        r"268435456 bytes per file",
    )
    assert CountingReader.most < MIB, "the member's data was decompressed before refusing it"


def test_declared_total_is_capped(bomb, models):
    expected = r"brings the declared total to 629145600 bytes, over the cap of 536870912"
    refused(bomb, models, expected, max_file_bytes=1 << 30)


def test_total_cap_adds_up_members(tmp_path, models):
    sizes = {"manifest.json": 0, "a.bin": 3 * MIB, "b.bin": 3 * MIB}
    archive = zeros_tar_gz(tmp_path / "a.tar.gz", sizes)
    refused(
        archive,
        models,
        r"member 'b\.bin': brings the declared total to 6291456",
        max_total_bytes=5 * MIB,
    )


def test_oversized_headers_are_cut_off_by_the_stream_cap(tmp_path, models):
    # A pax header is read whole by tarfile before any member is seen: 4 MiB of it here.
    info, data = member("manifest.json", MANIFEST)
    info.pax_headers = {"comment": "x" * (4 * MIB)}
    archive = write_tar(tmp_path / "a.tar.gz", [(info, data)])
    refused(
        archive,
        models,
        r"tar stream is larger than .* decompression bomb",
        max_total_bytes=1024,
        max_files=2,
    )


def test_member_count_is_capped(tmp_path, models):
    members = [*bundle_members(), *(member(f"f{i}", b"") for i in range(1000))]
    archive = write_tar(tmp_path / "a.tar.gz", members)
    refused(archive, models, r"more than 1000 members \(the cap")
    refused(archive, models, r"more than 5 members", max_files=5)


def test_failure_while_writing_leaves_nothing(tmp_path, models, monkeypatch):
    archive = write_tar(tmp_path / "a.tar.gz", [*bundle_members(), member("z.bin", b"z")])
    real = archive_mod._copy_member
    calls = []

    def disk_full_on_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(archive_mod, "_copy_member", disk_full_on_third)
    with pytest.raises(OSError, match="No space left"):
        extract_bundle_archive(archive, models / "b")
    assert len(calls) == 3 and list(models.iterdir()) == []


@pytest.mark.parametrize("keep", [600, 1500, 2100])
def test_truncated_archives_are_refused(tmp_path, models, keep):
    full = write_tar(tmp_path / "full.tar", [*bundle_members(), member("big", bytes(1000))])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[:keep])
    refused(cut, models, r"truncated|unexpected end")


def test_truncated_gzip_is_refused(tmp_path, models):
    full = write_tar(tmp_path / "full.tar.gz", [*bundle_members(), member("r", os.urandom(4096))])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[:-100])
    refused(cut, models, r"corrupt or truncated .*expected a complete gzip-compressed tar")


def test_bad_gzip_checksum_is_refused(tmp_path, models):
    data = bytearray(write_tar(tmp_path / "a.tar.gz", bundle_members()).read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 in the gzip trailer (RFC 1952, 2.3.1)
    (tmp_path / "a.tar.gz").write_bytes(bytes(data))
    refused(tmp_path / "a.tar.gz", models, r"CRC check failed")


def test_not_an_archive(tmp_path, models):
    (tmp_path / "x.tar.gz").write_bytes(b"hello, not gzip")
    refused(tmp_path / "x.tar.gz", models, r"corrupt or truncated")
    (tmp_path / "x.zip").write_bytes(b"PK")
    refused(tmp_path / "x.zip", models, r"expected one ending in \.tar\.gz, \.tgz, \.tar")


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([], r"holds no files"),
        ([member("model.onnx", MODEL)], r"expected manifest\.json at the root or inside one"),
        ([*bundle_members("a/"), member("b/x", b"")], r"top level holds a, b"),
        (bundle_members("a/b/"), r"top level holds a$"),
    ],
)
def test_layout_must_be_root_or_one_folder(tmp_path, models, members, expected):
    refused(write_tar(tmp_path / "a.tar.gz", members), models, expected)


def test_existing_dest_is_refused_and_kept(tmp_path, models):
    (models / "b").mkdir()
    (models / "b" / "keep").write_text("mine")
    with pytest.raises(ArchiveError, match="already exists"):
        extract_bundle_archive(write_tar(tmp_path / "a.tar", bundle_members()), models / "b")
    assert (models / "b" / "keep").read_text() == "mine"


NAME_PARTS = st.sampled_from(["a", "b", "..", ".", "", "evil", "x y", "ü", "C:", "\\", "..\\"])
NAMES = st.one_of(
    st.tuples(st.booleans(), st.lists(NAME_PARTS, min_size=1, max_size=5)).map(
        lambda t: ("/" if t[0] else "") + "/".join(t[1])
    ),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)


@settings(max_examples=100, deadline=None)
@given(NAMES)
def test_member_names_never_escape_dest(name):
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        archive = write_tar(sandbox / "a.tar", [*bundle_members(), member(name, b"payload")])
        models = sandbox / "models"
        try:
            dest = extract_bundle_archive(archive, models / "b")
        except ArchiveError:
            assert not models.exists() or list(models.iterdir()) == []
            return
        written = {p for p in sandbox.rglob("*") if p.is_file()} - {archive}
        assert all(p.is_relative_to(dest) for p in written), written
        assert not any(p.is_symlink() for p in sandbox.rglob("*"))
        parts = [p for p in name.split("/") if p not in ("", ".")]
        assert dest.joinpath(*parts).read_bytes() == b"payload"


# --- pack ---------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_signing_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def make_bundle(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"not really onnx" * 100)
    (path / "aux").mkdir()
    (path / "aux" / "anchors.npy").write_bytes(b"anchors")
    write_manifest(
        path,
        {
            "schema": "edgesight.bundle/1",
            "name": "toy",
            "version": 1,
            "task": "classify",
            "labels": ["a"],
            "model": {"file": "model.onnx", "format": "onnx"},
            "input": {"width": 8, "height": 8},
            "decoder": {"type": "softmax"},
            "files": {"model.onnx": "", "aux/anchors.npy": ""},
        },
    )
    return path


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_pack_is_reproducible(tmp_path, suffix):
    bundle = make_bundle(tmp_path / "b")
    assert run(["pack", str(bundle), "--out", str(tmp_path / f"one{suffix}")]) == 0
    for path in bundle.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert run(["pack", str(bundle), "--out", str(tmp_path / f"two{suffix}")]) == 0
    one, two = (tmp_path / f"one{suffix}").read_bytes(), (tmp_path / f"two{suffix}").read_bytes()
    assert one == two
    raw = zlib.decompress(one, wbits=31) if suffix != ".tar" else one
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["aux/anchors.npy", "manifest.json", "model.onnx"]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {
        (0, 0, 0, "", "", 0o644)
    }


def test_signed_bundle_survives_pack_and_extract(tmp_path, models, capsys):
    bundle = make_bundle(tmp_path / "b")
    key = Ed25519PrivateKey.generate()
    sign_manifest(bundle, key)
    assert run(["pack", str(bundle), "--out", str(tmp_path / "b.tar.gz")]) == 0
    assert "packed signed bundle" in capsys.readouterr().out
    dest = extract_bundle_archive(tmp_path / "b.tar.gz", models / "b")
    raw = (dest / "manifest.json").read_bytes()
    assert verify_bundle_signature(dest, raw, [key.public_key()]) == fingerprint(key.public_key())
    loaded = load_bundle(dest)
    check_no_unlisted_files(dest, loaded.manifest.files)


def test_pack_refuses_unlisted_files_and_broken_bundles(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    (bundle / "notes.txt").write_text("hi")
    assert run(["pack", str(bundle), "--out", str(tmp_path / "b.tar.gz")]) == 2
    assert "not listed in manifest.json: notes.txt" in capsys.readouterr().err
    (bundle / "notes.txt").unlink()
    (bundle / "model.onnx").write_bytes(b"changed")
    assert run(["pack", str(bundle), "--out", str(tmp_path / "b.tar.gz")]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no partial archive


def test_pack_refuses_bad_out_paths(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    assert run(["pack", str(bundle), "--out", str(tmp_path / "b.zip")]) == 2
    assert "expected a name ending in .tar.gz" in capsys.readouterr().err
    assert run(["pack", str(bundle), "--out", str(bundle / "self.tar.gz")]) == 2
    assert "must not be written inside the bundle" in capsys.readouterr().err
