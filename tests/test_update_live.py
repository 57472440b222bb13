"""A remote model update end to end, as an operator runs it: a real agent on a looping clip, a
real mosquitto, the update_model command, a loopback HTTP server with the signed bundle. The
model topic says each state; results keep flowing with none lost and the model id changes
between two consecutive results; a bad bundle is rejected and a model that stops detecting is
rolled back by its probation, the old model serving throughout."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.signing import public_key_base64
from tests.helpers.agent_run import (
    BASE,
    WAIT_S,
    Assets,
    Requester,
    agent_config,
    requester,
    results,
    running_agent,
    source,
    write_config,
)
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.update_server import serving
from tools.bad_models import build, pack

MODEL = f"{BASE}/model"


@pytest.fixture
def setup(
    tmp_path: Path, broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> Iterator[tuple[Path, Ed25519PrivateKey, Recorder, Requester]]:
    key = Ed25519PrivateKey.generate()
    v1 = build("good", tmp_path / "v1", key, version=1)
    clip = write_clip(tmp_path / "clip.mp4")
    assets = Assets(v1, clip)
    cfg = agent_config(assets, broker, tmp_path / "state", [source(assets)])
    cfg["model"]["public_keys"] = [public_key_base64(key.public_key())]
    cfg["updates"] = {"allow_http": True, "allow_private_addresses": True, "probation_s": 3}
    rec = mqtt_recorder(broker, f"{BASE}/#")
    with requester(broker) as req:
        yield write_config(tmp_path / "agent.json", cfg), key, rec, req


def states(rec: Recorder) -> list[dict[str, Any]]:
    return list(rec.json(MODEL))


def wait_state(rec: Recorder, state: str, version: int | None = None) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [m for m in states(rec) if m["state"] == state
                and (version is None or m["version"] == version)]  # fmt: skip

    assert rec.wait_for(lambda: bool(found()), WAIT_S), states(rec)
    return found()[-1]


def offer(tmp_path: Path, folder: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    archive, sha, size = pack(folder, tmp_path / f"{name}.tar.gz")
    return archive.read_bytes(), {"sha256": sha, "size": size}


def test_an_update_swaps_between_two_frames_with_no_result_lost(
    tmp_path: Path, setup: tuple[Path, Ed25519PrivateKey, Recorder, Requester]
) -> None:
    config, key, rec, req = setup
    with running_agent(config):
        wait_state(rec, "active", 1)
        assert rec.wait_for(lambda: len(results(rec)) >= 10, WAIT_S)
        blob, pinned = offer(tmp_path, build("good", tmp_path / "v2", key, version=2), "v2")
        with serving(blob) as srv:
            reply = req.request("update_model", {"url": srv.url, "version": 2, **pinned})
            assert reply["ok"], reply
            active = wait_state(rec, "active", 2)
        assert active["sha256"] == pinned["sha256"] and active["previous"] is None
        seen = [m["state"] for m in states(rec) if m["version"] == 2]
        assert seen == ["downloading", "verifying", "staged", "trial", "active"], seen
        n = len(results(rec))
        assert rec.wait_for(lambda: len(results(rec)) >= n + 10, WAIT_S)
    got = results(rec)
    models = [r["model"] for r in got]
    assert models[0].endswith("@1") and models[-1].endswith("@2"), (models[0], models[-1])
    switch = [i for i in range(1, len(models)) if models[i] != models[i - 1]]
    assert len(switch) == 1, "the model changes once, between two consecutive results"
    seqs = [r["seq"] for r in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no result lost"


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("wrong_key", "configured keys"),
        ("unsigned", "sign"),
        ("other_labels", "label"),
        ("nan", "NaN"),
        ("loader_crash", "load"),
        ("lower", "not higher"),
    ],
)
def test_a_bad_bundle_is_rejected_and_the_old_model_serves_on(
    tmp_path: Path,
    setup: tuple[Path, Ed25519PrivateKey, Recorder, Requester],
    kind: str,
    why: str,
) -> None:
    config, key, rec, req = setup
    folder = (
        build("good", tmp_path / "b", key, version=0)
        if kind == "lower"
        else build(kind, tmp_path / "b", key, version=3)
    )
    blob, pinned = offer(tmp_path, folder, "bad")
    version = 0 if kind == "lower" else 3
    with running_agent(config), serving(blob) as srv:
        wait_state(rec, "active", 1)
        reply = req.request("update_model", {"url": srv.url, "version": version, **pinned})
        assert reply["ok"], reply
        rejected = wait_state(rec, "rejected")
        assert why.lower() in (rejected["reason"] or "").lower(), rejected
        n = len(results(rec))
        assert rec.wait_for(lambda: len(results(rec)) >= n + 5, WAIT_S), "the old model stopped"
    assert all(r["model"].endswith("@1") for r in results(rec))


def test_a_model_that_stops_detecting_is_rolled_back_in_probation(
    tmp_path: Path, setup: tuple[Path, Ed25519PrivateKey, Recorder, Requester]
) -> None:
    config, key, rec, req = setup
    # No trial frames: the child's synthetic frames cannot tell it detects nothing; probation can.
    blind = build("blind", tmp_path / "blind", key, version=2, trial=False)
    blob, pinned = offer(tmp_path, blind, "blind")
    with running_agent(config), serving(blob) as srv:
        wait_state(rec, "active", 1)
        assert rec.wait_for(lambda: len(results(rec)) >= 30, WAIT_S)  # the old model's baseline
        assert req.request("update_model", {"url": srv.url, "version": 2, **pinned})["ok"]
        back = wait_state(rec, "rolled_back")
        assert back["version"] == 1 and "detect" in back["reason"], back
        n = len(results(rec))
        assert rec.wait_for(lambda: len(results(rec)) >= n + 5, WAIT_S)
    assert results(rec)[-1]["model"].endswith("@1")
    state = json.loads((config.parent / "state" / "state.json").read_text())
    assert pinned["sha256"] in state.get("rejected", {}), state


def test_without_pinned_keys_update_commands_are_refused_saying_why(
    tmp_path: Path, broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> None:
    v1 = build("good", tmp_path / "v1", Ed25519PrivateKey.generate(), version=1)
    assets = Assets(v1, write_clip(tmp_path / "clip.mp4"))
    cfg = agent_config(assets, broker, tmp_path / "state", [source(assets)])
    config = write_config(tmp_path / "agent.json", cfg)  # no model.public_keys
    rec = mqtt_recorder(broker, f"{BASE}/#")
    with running_agent(config), requester(broker) as req:
        assert rec.wait_for(lambda: len(results(rec)) >= 1, WAIT_S)
        args = {"url": "https://example.org/b.tar.gz", "sha256": "a" * 64, "size": 10}
        reply = req.request("update_model", {**args, "version": 2})
        assert not reply["ok"] and "public_keys" in reply["error"], reply
    assert not (tmp_path / "state" / "models").exists()  # nothing adopted, nothing installed
