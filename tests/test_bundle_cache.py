"""Bundles as archives: load_bundle unpacks a .tar.gz once into <cache>/<sha256>/, verifies it on
every load, and every command that loads a bundle (run, check-config, serve, bench) takes one."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import BundleError, load_bundle
from edge_agent.bundle import cache as cache_mod
from edge_agent.bundle.cache import default_cache_dir
from edge_agent.bundle.signing import fingerprint, sign_manifest
from edge_agent.cli import main
from edge_agent.predictor import Predictor
from edge_agent.serve import make_server
from tests.helpers.clips import FRAMES, write_clip
from tests.helpers.http import RED_BOX, RED_PNG, call, running
from tools.toy_models import colour_blocks_bundle
from trainer.signing_cli import pack_bundle


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def packed(tmp_path: Path, name: str = "shelf.tar.gz", key: Ed25519PrivateKey | None = None):
    """(bundle folder, archive of it made by ``edge-trainer pack``)."""
    folder = colour_blocks_bundle(tmp_path / "src")
    if key is not None:
        sign_manifest(folder, key)
    return folder, pack_bundle(folder, tmp_path / name)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """The cache folder; $EDGESIGHT_BUNDLE_CACHE points at it, so nothing lands in ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache_mod.CACHE_ENV, str(folder))
    return folder


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- load_bundle ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shelf.tar.gz", "shelf.tgz", "shelf.tar"])
def test_an_archive_loads_like_its_folder(tmp_path, cache, name):
    folder, archive = packed(tmp_path, name)
    from_folder = load_bundle(folder)
    bundle = load_bundle(archive)
    assert bundle.path == cache / sha256_of(archive)
    assert bundle.archive == archive and bundle.source == archive
    assert bundle.manifest == from_folder.manifest
    assert bundle.manifest_sha256 == from_folder.manifest_sha256
    assert bundle.model_path.read_bytes() == (folder / "model.onnx").read_bytes()
    assert from_folder.archive is None and from_folder.source == folder
    assert cache_entries(cache) == [sha256_of(archive)]


def test_a_bundle_inside_one_top_level_folder_loads(tmp_path, cache):
    folder = colour_blocks_bundle(tmp_path / "shelf-v7")
    archive = tmp_path / "shelf-v7.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="shelf-v7")
    assert load_bundle(archive).model_id == "colour-blocks@1"


def test_cache_dir_argument_overrides_the_environment(tmp_path, cache):
    _, archive = packed(tmp_path)
    other = tmp_path / "other"
    assert load_bundle(archive, cache_dir=other).path == other / sha256_of(archive)
    assert not cache.exists()


def test_a_second_load_reuses_the_unpacked_folder(tmp_path, cache, monkeypatch):
    _, archive = packed(tmp_path)
    first = load_bundle(archive)
    mtime = first.path.stat().st_mtime_ns

    def no_extraction(*args, **kwargs):
        raise AssertionError("the archive was unpacked again")

    monkeypatch.setattr(cache_mod, "extract_bundle_archive", no_extraction)
    second = load_bundle(archive)
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert cache_entries(cache) == [first.path.name]


def test_a_new_archive_at_the_same_path_gets_its_own_folder(tmp_path, cache):
    folder, archive = packed(tmp_path)
    first = load_bundle(archive)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = 2
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pack_bundle(folder, archive)
    second = load_bundle(archive)
    assert second.model_id == "colour-blocks@2" and second.path != first.path
    assert cache_entries(cache) == sorted([first.path.name, second.path.name])


def test_a_tampered_file_in_the_cache_is_caught_by_its_sha256(tmp_path, cache):
    _, archive = packed(tmp_path)
    bundle = load_bundle(archive)
    bundle.model_path.write_bytes(b"not the model that was signed off")
    with pytest.raises(BundleError) as err:
        load_bundle(archive)
    message = str(err.value)
    assert f"bundle archive {archive}: " in message
    assert "model.onnx: sha256 mismatch" in message
    assert f"delete {bundle.path} to unpack the archive again" in message


def test_a_half_extracted_folder_is_never_taken_as_complete(tmp_path, cache):
    _, archive = packed(tmp_path)
    digest = sha256_of(archive)
    cache.mkdir()
    (cache / f".{digest}.extract-crashed").mkdir()  # a crash mid-extraction leaves this
    (cache / digest).mkdir()  # a folder under the final name without a manifest: not ours
    (cache / digest / "model.onnx").write_bytes(b"half")
    bundle = load_bundle(archive)
    assert bundle.path == cache / digest and (bundle.path / "manifest.json").is_file()
    assert bundle.model_path.read_bytes() != b"half"


def test_an_extraction_that_fails_leaves_no_folder_behind(tmp_path, cache, monkeypatch):
    _, archive = packed(tmp_path)
    real = cache_mod.extract_bundle_archive

    def disk_full(source: Path, dest: Path) -> Path:
        real(source, dest.with_name("elsewhere"))  # the real thing, but not at dest
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "extract_bundle_archive", disk_full)
    with pytest.raises(BundleError, match=r"cannot unpack it into the cache .*No space left"):
        load_bundle(archive)
    assert sha256_of(archive) not in cache_entries(cache)


def test_another_process_unpacking_the_same_archive_meanwhile_is_fine(tmp_path, cache, monkeypatch):
    _, archive = packed(tmp_path)
    real = cache_mod.extract_bundle_archive

    def lost_the_race(source: Path, dest: Path) -> Path:
        real(source, dest)  # the other process
        raise OSError(39, "Directory not empty")  # our own rename onto its folder

    monkeypatch.setattr(cache_mod, "extract_bundle_archive", lost_the_race)
    assert load_bundle(archive).path == cache / sha256_of(archive)


def test_a_corrupt_archive_is_a_clear_error(tmp_path, cache):
    _, archive = packed(tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError) as err:
        load_bundle(archive)
    assert str(archive) in str(err.value)
    assert "corrupt or truncated" in str(err.value)
    assert "expected a complete gzip-compressed tar archive" in str(err.value)
    assert cache_entries(cache) == []  # nothing half-unpacked left behind


def test_a_file_that_is_not_an_archive_is_a_clear_error(tmp_path, cache):
    fake = tmp_path / "model.tar.gz"
    fake.write_text("just text")
    with pytest.raises(BundleError, match=rf"{fake}: corrupt or truncated"):
        load_bundle(fake)
    other = tmp_path / "model.zip"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(BundleError) as err:
        load_bundle(other)
    assert str(err.value) == (
        f"bundle {other}: not a directory or a bundle archive (expected a folder with "
        "manifest.json, or a .tar.gz, .tgz or .tar archive of one)"
    )


def test_a_missing_path_is_a_clear_error(tmp_path, cache):
    with pytest.raises(BundleError, match=r"no such folder or file \(expected a folder with"):
        load_bundle(tmp_path / "shelf.tar.gz")


def test_an_archive_without_a_manifest_is_a_clear_error(tmp_path, cache):
    archive = tmp_path / "shelf.tar.gz"
    with gzip.open(archive, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"bytes"))
    with pytest.raises(BundleError) as err:
        load_bundle(archive)
    assert str(err.value).startswith(f"archive {archive}: expected manifest.json at the root")
    assert cache_entries(cache) == []


def test_an_unsafe_archive_is_refused(tmp_path, cache):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError, match="is a symlink to '/etc/passwd'"):
        load_bundle(archive)


def test_a_signed_archive_is_verified_on_every_load(tmp_path, cache):
    key = Ed25519PrivateKey.generate()
    _, archive = packed(tmp_path, key=key)
    assert load_bundle(archive, [key.public_key()]).signed_by == fingerprint(key.public_key())
    bundle = load_bundle(archive, [key.public_key()])  # from the cache, checked again
    assert bundle.signed_by == fingerprint(key.public_key())
    (bundle.path / "extra.onnx").write_bytes(b"a second model nobody signed")
    with pytest.raises(BundleError, match=rf"bundle archive {archive}: .*extra\.onnx"):
        load_bundle(archive, [key.public_key()])


def test_an_unsigned_archive_is_refused_when_keys_are_set(tmp_path, cache):
    _, archive = packed(tmp_path)
    key = Ed25519PrivateKey.generate()
    with pytest.raises(BundleError, match=rf"bundle archive {archive}: .* is not signed"):
        load_bundle(archive, [key.public_key()])


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir({}) == tmp_path / "home" / ".cache" / "edgesight" / "bundles"
    assert default_cache_dir({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/edgesight/bundles")
    assert default_cache_dir({"XDG_CACHE_HOME": "relative"}) == (
        tmp_path / "home" / ".cache" / "edgesight" / "bundles"
    )  # the XDG spec says to ignore a relative path
    both = {"XDG_CACHE_HOME": "/xdg", cache_mod.CACHE_ENV: "/var/lib/edgesight/bundles"}
    assert default_cache_dir(both) == Path("/var/lib/edgesight/bundles")
    assert default_cache_dir({cache_mod.CACHE_ENV: ""}) == default_cache_dir({})


# --- the commands that load bundles -------------------------------------------------------


def agent_config(tmp_path: Path, bundle: str, uri: str = "0") -> Path:
    cfg = {
        "device_id": "t",
        "model": {"bundle": bundle, "threads": 1},
        "sources": [{"id": "cam", "uri": uri}],
        "mqtt": {"host": "127.0.0.1", "port": 9, "reconnect_max_delay_s": 1},  # nobody there
    }
    path = tmp_path / "agent.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_check_config_takes_an_archive(tmp_path, cache, capsys):
    packed(tmp_path)
    config = agent_config(tmp_path, "shelf.tar.gz")  # relative to the config file
    assert main(["check-config", str(config)]) == 0
    assert "colour-blocks@1" in capsys.readouterr().out


def test_check_config_names_a_corrupt_archive(tmp_path, cache, capsys):
    _, archive = packed(tmp_path)
    archive.write_bytes(archive.read_bytes()[:100])
    config = agent_config(tmp_path, "shelf.tar.gz")
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"model.bundle: archive {archive}: corrupt or truncated" in err


def test_run_takes_an_archive(tmp_path, cache):
    from edge_agent.config import load_config
    from edge_agent.pipeline import Agent

    packed(tmp_path)
    clip = write_clip(tmp_path / "clip.mp4")
    cfg = load_config(agent_config(tmp_path, "shelf.tar.gz", uri=str(clip)))
    seen = []
    agent = Agent(cfg, on_result=lambda result, frame: seen.append(result))
    try:
        agent.start()
        agent.wait()
    finally:
        agent.close()
    assert agent.bundle.source == tmp_path / "shelf.tar.gz"
    assert [r.seq for r in seen] == list(range(FRAMES))
    assert all(r.counts["red"] == 1 for r in seen)


def test_serve_takes_an_archive(tmp_path, cache):
    _, archive = packed(tmp_path)
    predictor = Predictor(load_bundle(archive), threads=1)
    with running(make_server(predictor, "127.0.0.1", 0)) as server:
        status, answer, _ = call(server, "/image", RED_PNG)
    assert status == 200
    (pred,) = answer["predictions"]
    assert pred["tagName"] == "red" and pred["boundingBox"] == pytest.approx(RED_BOX)


def test_bench_takes_an_archive(tmp_path, cache):
    # bench loads each --bundle with load_bundle, then times the runtime on it (the whole
    # command, with its MQTT agent rounds, is test_bench.py's job)
    from edge_agent.bench import bench_image, runtime_samples

    _, archive = packed(tmp_path)
    bundle = load_bundle(archive)
    infer_ms, decode_ms = runtime_samples(bundle, "onnx", 1, 2, bench_image())
    assert len(infer_ms) == len(decode_ms) == 2
    assert bundle.model_path.is_relative_to(cache)
