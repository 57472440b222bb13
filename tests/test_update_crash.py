"""SIGKILL at every named step of an update, then a restart: the device runs a whole, verified
model (the old one or the new one, never a part), cleanup removes what the crash left, and
recover() says what happened. A child process runs the update; EDGESIGHT_UPDATE_KILL_AT makes
it SIGKILL itself at one step (edge_agent/updates/crashpoint.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import load_bundle
from edge_agent.updates.crashpoint import KILL_AT_ENV, crashpoint
from edge_agent.updates.device_state import DeviceState, UpdateRecord
from edge_agent.updates.store import CRASHPOINTS, MAX_PROBATION_BOOTS, SHA256_RE, ModelStore
from tests.helpers.store_bundles import make_bundle

ROOT = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 60
#: (step, pending state at that step, whether models/current is the new model afterwards)
UPDATE_STEPS = [
    ("downloading", "downloading", False),
    ("verifying", "verifying", False),
    ("stage:copied", "verifying", False),
    ("stage:renamed", "verifying", False),
    ("stage:complete", "verifying", False),
    ("staged", "staged", False),
    ("trial", "trial", False),
    ("activate:start", "trial", False),
    ("activate:previous-temp", "trial", False),
    ("activate:previous", "trial", False),
    ("activate:current-temp", "trial", False),
    ("activate:current", "trial", True),
    ("probation", "trial", True),
    ("active", None, True),
]


def run_update(state_dir: str, unpacked: str, sha: str) -> None:
    """The updater's steps against the store, as the child process runs them."""
    store, state = ModelStore(Path(state_dir)), DeviceState(Path(state_dir) / "state.json")
    state.load()
    rec = UpdateRecord(sha, "shelf", 2, "downloading", "command", time.time(),
                       store.current_sha256())  # fmt: skip
    state.set_pending(rec)
    crashpoint("downloading")
    store.download_path(sha).write_bytes(b"the archive, half of it")
    state.set_pending(replace(rec, state="verifying"))
    crashpoint("verifying")
    store.stage(sha, Path(unpacked))
    store.download_path(sha).unlink()
    state.set_pending(replace(rec, state="staged"))
    crashpoint("staged")
    state.set_pending(replace(rec, state="trial"))
    crashpoint("trial")
    store.activate(sha)
    crashpoint("probation")
    state.accept_version("shelf", 2)
    state.clear_pending()
    crashpoint("active")


def run_recover(state_dir: str) -> None:
    """A restart's recovery, as the child process runs it (to be killed mid-rollback)."""
    state = DeviceState(Path(state_dir) / "state.json")
    state.load()
    print(ModelStore(Path(state_dir)).recover(state))


def child(function: str, *args: str, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(KILL_AT_ENV, None)
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    code = f"import sys; from tests.test_update_crash import {function}; {function}(*sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)  # fmt: skip


def assert_killed_at(proc: subprocess.CompletedProcess[str], step: str) -> None:
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"crashpoint: SIGKILL at {step}"


def assert_whole(store: ModelStore, key: Ed25519PrivateKey, expected_version: int) -> None:
    """current is a complete folder that verifies (signature, every file's sha256); no model
    folder under its final name lacks its marker; nothing temporary is left."""
    current = store.current()
    assert current is not None
    assert load_bundle(current, [key.public_key()]).manifest.version == expected_version
    for entry in os.listdir(store.models):
        assert not entry.startswith("."), f"{entry} left behind"
        if SHA256_RE.fullmatch(entry):
            assert store.is_complete(entry), f"{entry} is partial"
    assert os.listdir(store.downloads) == []


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def device(tmp_path: Path, key: Ed25519PrivateKey) -> tuple[Path, str, str, Path]:
    """A state dir running v1, and v2 unpacked beside it: (state_dir, old sha, new sha, v2)."""
    state_dir = tmp_path / "state"
    store = ModelStore(state_dir)
    old = make_bundle(tmp_path / "v1", 1, key)
    store.stage(old, tmp_path / "v1")
    store.activate(old)
    new = make_bundle(tmp_path / "v2", 2, key)
    return state_dir, old, new, tmp_path / "v2"


def test_the_steps_named_here_cover_the_store_crash_points():
    steps = {step for step, _, _ in UPDATE_STEPS}
    assert {p for p in CRASHPOINTS if not p.startswith("rollback:")} <= steps


def test_an_update_without_a_crash_completes(device, key):
    state_dir, old, new, unpacked = device
    proc = child("run_update", str(state_dir), str(unpacked), new, kill_at=None)
    assert proc.returncode == 0, proc.stderr
    store = ModelStore(state_dir)
    assert (store.current_sha256(), store.previous_sha256()) == (new, old)
    assert_whole(store, key, 2)


@pytest.mark.parametrize(("step", "pending_state", "swapped"), UPDATE_STEPS)
def test_sigkill_at_each_step_then_restart(device, key, step, pending_state, swapped):
    state_dir, old, new, unpacked = device
    assert_killed_at(child("run_update", str(state_dir), str(unpacked), new, kill_at=step), step)

    store, state = ModelStore(state_dir), DeviceState(state_dir / "state.json")  # a restart
    state.load()
    words = store.recover(state)
    removed = store.cleanup()
    assert store.current_sha256() == (new if swapped else old)
    assert_whole(store, key, 2 if swapped else 1)
    if pending_state is None:
        assert words is None and state.pending is None
    elif swapped:
        assert words == "trial: restarted during probation (1 of 2 restarts allowed)"
        assert state.pending is not None and state.pending.boots == 1
        assert store.previous_sha256() == old  # the way back is kept for probation
    else:
        assert words == f"rejected: interrupted at {pending_state}"
        assert state.rejected(new) == f"interrupted at {pending_state}"
        assert state.pending is None
    leftovers = {
        "stage:copied": f"models/.tmp-{new}",
        "stage:renamed": f"models/{new}",
        "verifying": f"downloads/{new}.part",
        "activate:previous-temp": "models/.previous.",
        "activate:current-temp": "models/.current.",
    }
    if step in leftovers:
        assert any(r.startswith(leftovers[step]) for r in removed), removed
    assert store.cleanup() == []


@pytest.mark.parametrize("step", [p for p in CRASHPOINTS if p.startswith("rollback:")])
def test_sigkill_while_rolling_a_crash_loop_back(device, key, step):
    state_dir, old, new, unpacked = device
    store = ModelStore(state_dir)
    store.stage(new, unpacked)
    store.activate(new)
    state = DeviceState(state_dir / "state.json")
    rec = UpdateRecord(new, "shelf", 2, "trial", "fleet:lobby", 1.0, old, MAX_PROBATION_BOOTS)
    state.set_pending(rec)
    assert_killed_at(child("run_recover", str(state_dir), kill_at=step), step)

    store, state = ModelStore(state_dir), DeviceState(state_dir / "state.json")
    state.load()
    assert store.recover(state) == "rolled_back: crash loop during probation"
    store.cleanup()
    assert store.current_sha256() == old
    assert_whole(store, key, 1)
    assert state.pending is None and state.rejected(new) == "crash loop during probation"
