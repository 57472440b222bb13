"""SIGKILL during a remote update, for real: `edge-agent run` is killed by its own test-only
crash hook (EDGESIGHT_UPDATE_KILL_AT) at each named state of an update, then started again
without it. Every restart runs a verified model (old or new, never partial), leaves no
temporary file behind, says on the model topic what became of the update, and makes results."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import load_bundle
from edge_agent.bundle.signing import public_key_base64
from edge_agent.updates.store import ModelStore
from tests.helpers.agent_run import (
    AGENT,
    BASE,
    WAIT_S,
    Assets,
    agent_config,
    online_run,
    requester,
    results,
    source,
    write_config,
)
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.update_server import serving
from tools.bad_models import build, pack

MODEL = f"{BASE}/model"
#: (crash point, the model that must run after the restart, what the model topic says).
POINTS = [
    ("downloading", 1, "rejected"),
    ("verifying", 1, "rejected"),
    ("staged", 1, "rejected"),
    ("activate:previous", 1, "rejected"),
    ("trial", 1, "rejected"),
    ("activate:current", 2, "active"),
    ("probation", 2, "active"),
]


def start(config: Path, log: Path, kill_at: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("EDGESIGHT_UPDATE_KILL_AT", None)
    if kill_at:
        env["EDGESIGHT_UPDATE_KILL_AT"] = kill_at
    with log.open("ab") as out:
        return subprocess.Popen(
            [AGENT, "run", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, and the agent must end; killed after WAIT_S so the failure shows its log."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"SIGTERM did not end the agent:\n{log.read_text()}") from None


@pytest.mark.parametrize(("point", "runs", "said"), POINTS, ids=[p[0] for p in POINTS])
def test_sigkill_at_each_state_then_restart(
    tmp_path: Path,
    broker: Broker,
    mqtt_recorder: Callable[..., Recorder],
    point: str,
    runs: int,
    said: str,
) -> None:
    key = Ed25519PrivateKey.generate()
    v1 = build("good", tmp_path / "v1", key, version=1)
    assets = Assets(v1, write_clip(tmp_path / "clip.mp4"))
    cfg = agent_config(assets, broker, tmp_path / "state", [source(assets)])
    cfg["model"]["public_keys"] = [public_key_base64(key.public_key())]
    cfg["updates"] = {"allow_http": True, "allow_private_addresses": True, "probation_s": 2}
    config = write_config(tmp_path / "agent.json", cfg)
    archive, sha, size = pack(build("good", tmp_path / "v2", key, version=2), tmp_path / "v2.tgz")
    rec = mqtt_recorder(broker, f"{BASE}/#")
    log = tmp_path / "agent.log"

    def model_states() -> list[dict[str, Any]]:
        return list(rec.json(MODEL))

    # A first start adopts the configured bundle into the store (its own activate), cleanly.
    proc = start(config, log)
    try:
        assert rec.wait_for(lambda: any(m["state"] == "active" for m in model_states()), WAIT_S)
    finally:
        stop(proc, log)
    rec.clear()
    proc = start(config, log, kill_at=point)
    try:
        assert rec.wait_for(lambda: any(m["state"] == "active" for m in model_states()), WAIT_S)
        online_run(rec)  # said after the command subscription: a command now is not lost
        with serving(archive.read_bytes()) as srv, requester(broker) as req:
            reply = req.request(
                "update_model", {"url": srv.url, "sha256": sha, "size": size, "version": 2}
            )
            assert reply["ok"], reply
            assert proc.wait(WAIT_S) == -9, log.read_text()  # killed at the crash point
    finally:
        stop(proc, log)
    assert f"crashpoint: SIGKILL at {point}" in log.read_text()
    rec.clear()
    proc = start(config, log)
    try:
        assert rec.wait_for(lambda: bool(model_states()), WAIT_S), log.read_text()
        first = model_states()[0]
        assert first["version"] == 2, (first, log.read_text())  # the update's outcome
        if said == "rejected":
            assert first["state"] == "rejected" and "interrupted" in first["reason"], first
        else:  # swapped in before the crash: probation goes on, then the model stays
            assert first["state"] == "trial" and "restarted" in first["reason"], first
            assert rec.wait_for(lambda: model_states()[-1]["state"] == "active", WAIT_S)
        assert rec.wait_for(lambda: len(results(rec)) >= 5, WAIT_S), log.read_text()
        assert all(r["model"].endswith(f"@{runs}") for r in results(rec))
    finally:
        stop(proc, log)
    store = ModelStore(tmp_path / "state")
    current = store.current()
    assert current is not None
    load_bundle(current, [key.public_key()])  # whole and verified
    leftovers = [p.name for p in (tmp_path / "state" / "downloads").iterdir()]
    leftovers += [p.name for p in (tmp_path / "state" / "models").glob(".tmp*")]
    assert leftovers == [], leftovers
