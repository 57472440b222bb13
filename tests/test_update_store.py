"""The model store and state.json with real files: staging, swaps, rollback, cleanup, recovery."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import load_bundle
from edge_agent.updates.crashpoint import KILL_AT_ENV, crashpoint
from edge_agent.updates.device_state import MAX_REJECTED, DeviceState, UpdateRecord
from edge_agent.updates.store import MAX_PROBATION_BOOTS, ModelStore
from tests.helpers.store_bundles import make_bundle


def staged(store: ModelStore, tmp_path: Path, version: int) -> str:
    sha = make_bundle(tmp_path / f"unpacked-{version}", version)
    store.stage(sha, tmp_path / f"unpacked-{version}")
    return sha


def record(sha: str, state: str = "downloading", previous: str | None = None) -> UpdateRecord:
    return UpdateRecord(sha, "shelf", 2, state, "command", 1.5, previous)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "state")


# -- crashpoint ----------------------------------------------------------------------------


def test_crashpoint_is_a_no_op_unless_named(monkeypatch):
    monkeypatch.delenv(KILL_AT_ENV, raising=False)
    crashpoint("activate:current")
    monkeypatch.setenv(KILL_AT_ENV, "stage:copied, activate:previous")
    crashpoint("activate:current")  # not in the list: this process lives on
    crashpoint("activate")  # a prefix of a listed name is not the name


# -- DeviceState ---------------------------------------------------------------------------


def test_state_round_trips_through_the_file(tmp_path):
    state = DeviceState(tmp_path / "state.json")
    state.load()  # missing: empty
    assert state.highest_version("shelf") is None and state.pending is None
    state.accept_version("shelf", 3)
    state.accept_seq("lobby", 7)
    state.mark_rejected("ab" * 32, "bad signature")
    state.set_pending(record("cd" * 32, previous="ef" * 32))
    again = DeviceState(tmp_path / "state.json")
    again.load()
    assert again.highest_version("shelf") == 3
    assert again.desired_seq("lobby") == 7
    assert again.rejected("ab" * 32) == "bad signature" and again.rejected("00" * 32) is None
    assert again.pending == record("cd" * 32, previous="ef" * 32)
    assert again.damaged is None
    again.clear_pending()
    assert DeviceState(tmp_path / "state.json").pending is None
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # no temp file left


def test_versions_and_seqs_only_go_up_also_after_a_restart(tmp_path):
    state = DeviceState(tmp_path / "state.json")
    state.accept_version("shelf", 5)
    state.accept_seq("lobby", 2)
    state = DeviceState(tmp_path / "state.json")
    state.load()
    for lower in (5, 4):
        with pytest.raises(ValueError, match=f"version {lower} is not above the highest.*5"):
            state.accept_version("shelf", lower)
    with pytest.raises(ValueError, match="seq 2 is not above the last accepted, 2"):
        state.accept_seq("lobby", 2)
    state.accept_version("other-model", 1)  # per model name
    assert state.highest_version("shelf") == 5


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[]", b'{"schema": "other"}',
     b'{"schema": "edgesight.device-state/1", "versions": {"shelf": "3"}}',
     b'{"schema": "edgesight.device-state/1", "pending": {"sha256": "x"}}'],
)  # fmt: skip
def test_a_damaged_file_is_moved_aside_with_its_bytes_and_logged(tmp_path, caplog, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    state = DeviceState(path)
    with caplog.at_level(logging.ERROR):
        state.load()
    assert state.highest_version("shelf") is None and state.pending is None
    assert state.damaged is not None and "moved aside" in state.damaged
    (aside,) = tmp_path.glob("state.json.damaged-*")
    assert aside.read_bytes() == content
    assert not path.exists()
    assert "state.json was damaged" in caplog.text
    state.accept_version("shelf", 1)  # and the device carries on with a fresh file
    assert json.loads(path.read_bytes())["versions"] == {"shelf": 1}


def test_a_failed_write_changes_nothing_in_memory(tmp_path):
    state = DeviceState(tmp_path / "missing-folder" / "state.json")
    with pytest.raises(OSError):
        state.accept_version("shelf", 4)
    assert state.highest_version("shelf") is None


def test_rejected_reasons_are_bounded_newest_kept(tmp_path):
    state = DeviceState(tmp_path / "state.json")
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(MAX_REJECTED + 5)]
    for sha in shas:
        state.mark_rejected(sha, "x" * 2000)
    assert state.rejected(shas[0]) is None
    assert state.rejected(shas[-1]) == "x" * 500
    state.forget_rejected(shas[-1])
    assert state.rejected(shas[-1]) is None


# -- ModelStore ----------------------------------------------------------------------------


def test_folders_are_created_owner_and_group_only(store):
    for folder in (store.models, store.downloads):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert store.current() is None and store.previous() is None
    assert store.download_path("ab" * 32) == store.downloads / f"{'ab' * 32}.part"
    with pytest.raises(ValueError, match=re.escape("64 lowercase hex digits, got '../etc'")):
        store.download_path("../etc")


def test_stage_moves_a_bundle_in_that_still_verifies_signed(store, tmp_path):
    key = Ed25519PrivateKey.generate()
    sha = make_bundle(tmp_path / "unpacked", 2, key)
    folder = store.stage(sha, tmp_path / "unpacked")
    assert folder == store.models / sha and not (tmp_path / "unpacked").exists()
    assert store.is_complete(sha)
    # the marker is beside the folder: a signed bundle holds only what its manifest lists
    bundle = load_bundle(folder, [key.public_key()])
    assert bundle.manifest.version == 2
    assert sorted(os.listdir(store.models)) == [sha, f"{sha}.complete"]


def test_stage_refuses_symlinks_and_a_missing_folder(store, tmp_path):
    sha = make_bundle(tmp_path / "unpacked", 2)
    (tmp_path / "unpacked" / "link").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="link is a symlink"):
        store.stage(sha, tmp_path / "unpacked")
    with pytest.raises(ValueError, match="is not a folder"):
        store.stage(sha, tmp_path / "nowhere")
    assert os.listdir(store.models) == []


def test_activate_swaps_current_and_previous_with_relative_links(store, tmp_path):
    one, two, three = (staged(store, tmp_path, v) for v in (1, 2, 3))
    store.activate(one)
    assert store.current() == store.models / one and store.previous() is None
    store.activate(two)
    assert (store.current_sha256(), store.previous_sha256()) == (two, one)
    assert os.readlink(store.models / "current") == two  # relative: the state dir can move
    store.activate(two)  # again: nothing changes
    assert (store.current_sha256(), store.previous_sha256()) == (two, one)
    store.activate(three)
    assert (store.current_sha256(), store.previous_sha256()) == (three, two)
    assert not [n for n in os.listdir(store.models) if n.endswith(".tmp")]
    with pytest.raises(ValueError, match="not a complete folder"):
        store.activate("ee" * 32)


def test_rollback_returns_to_previous_once(store, tmp_path):
    one, two = (staged(store, tmp_path, v) for v in (1, 2))
    assert store.rollback() is None
    store.activate(one)
    store.activate(two)
    assert store.rollback() == store.models / one
    assert store.current_sha256() == one and store.previous() is None
    assert store.rollback() is None  # never back to the model just left


def test_dangling_partial_or_foreign_links_count_as_none(store, tmp_path, caplog):
    one = staged(store, tmp_path, 1)
    (store.models / "current").symlink_to("ab" * 32)  # dangling
    (store.models / "previous").symlink_to("/etc")  # not ours
    with caplog.at_level(logging.WARNING):
        assert store.current() is None and store.previous() is None
        store.current()
    assert caplog.text.count("never completed") == 1  # logged once
    (store.models / f"{one}.complete").unlink()  # a folder never marked complete
    (store.models / "current").unlink()
    (store.models / "current").symlink_to(one)
    assert store.current() is None


def test_cleanup_removes_leftovers_and_old_models_but_never_current_or_previous(store, tmp_path):
    shas = [staged(store, tmp_path, v) for v in range(1, 7)]
    for i, sha in enumerate(shas):  # staged one second apart, oldest first
        os.utime(store.models / f"{sha}.complete", (1000 + i, 1000 + i))
    store.activate(shas[0])
    store.activate(shas[1])  # current and previous are the two oldest
    part = store.download_path("aa" * 32)
    part.write_bytes(b"half")
    (store.models / f".tmp-{'bb' * 32}").mkdir()
    (store.models / ("cc" * 32)).mkdir()  # renamed in, never marked complete
    (store.models / f"{'dd' * 32}.complete").write_text("{}")  # a marker without its folder
    (store.models / ".current.0123.tmp").symlink_to(shas[5])
    (store.models / "README").write_text("not ours")
    removed = store.cleanup(keep=3)
    assert sorted(removed) == sorted([
        f"downloads/{'aa' * 32}.part", f"models/.tmp-{'bb' * 32}", f"models/{'cc' * 32}",
        f"models/{'dd' * 32}.complete", "models/.current.0123.tmp",
        f"models/{shas[2]}.complete", f"models/{shas[2]}",
    ])  # fmt: skip
    assert sorted(os.listdir(store.models)) == sorted(
        ["README", "current", "previous"] + [n for s in [shas[0], shas[1], *shas[3:]]
                                            for n in (s, f"{s}.complete")]
    )  # fmt: skip
    assert store.cleanup(keep=3) == []


def test_recover_without_a_pending_update_says_nothing(store, tmp_path):
    state = DeviceState(tmp_path / "state.json")
    assert store.recover(state) is None


@pytest.mark.parametrize("at", ["downloading", "verifying", "staged", "trial"])
def test_recover_before_the_swap_keeps_the_old_model_and_rejects_the_bundle(store, tmp_path, at):
    old, new = staged(store, tmp_path, 1), staged(store, tmp_path, 2)
    store.activate(old)
    state = DeviceState(tmp_path / "state.json")
    state.set_pending(record(new, at, previous=old))
    assert store.recover(state) == f"rejected: interrupted at {at}"
    assert store.current_sha256() == old
    assert state.pending is None and state.rejected(new) == f"interrupted at {at}"


def test_recover_counts_boots_in_probation_then_rolls_a_crash_loop_back(store, tmp_path):
    old, new = staged(store, tmp_path, 1), staged(store, tmp_path, 2)
    store.activate(old)
    store.activate(new)
    path = tmp_path / "state.json"
    DeviceState(path).set_pending(record(new, "trial", previous=old))
    for boot in range(1, MAX_PROBATION_BOOTS + 1):
        state = DeviceState(path)  # a fresh start each time, as after a crash
        state.load()
        words = store.recover(state)
        assert words == f"trial: restarted during probation ({boot} of 2 restarts allowed)"
        assert store.current_sha256() == new and state.pending is not None
        assert state.pending.boots == boot
    state = DeviceState(path)
    state.load()
    assert store.recover(state) == "rolled_back: crash loop during probation"
    assert store.current_sha256() == old
    assert state.pending is None and state.rejected(new) == "crash loop during probation"


def test_recover_cannot_roll_back_without_a_previous_model(store, tmp_path):
    new = staged(store, tmp_path, 2)
    store.activate(new)
    state = DeviceState(tmp_path / "state.json")
    state.set_pending(replace(record(new, "trial"), boots=MAX_PROBATION_BOOTS))
    assert store.recover(state) == (
        "trial: crash loop during probation, but there is no previous model to roll back to"
    )
    assert store.current_sha256() == new
