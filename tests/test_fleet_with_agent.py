"""A staged rollout over simulated devices and one real agent in the same group, on one real
mosquitto: `edge-trainer fleet rollout` treats the real agent like any device; it downloads,
verifies, tries and swaps the model, results keep flowing, and the group's desired document is
published at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_agent.bundle.signing import load_private_key, load_public_key, public_key_base64
from tests.helpers.agent_run import (
    BASE,
    WAIT_S,
    Assets,
    agent_config,
    results,
    running_agent,
    source,
    write_config,
)
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.update_server import serving
from tests.helpers.waiting import wait_until
from tools.bad_models import build, pack
from tools.fleet_sim import SimConfig, SimFleet
from trainer.cli import main
from trainer.signing_cli import keygen

GROUP = "lab"


def test_a_rollout_updates_simulated_devices_and_a_real_agent(
    tmp_path: Path, broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> None:
    private, public = keygen(tmp_path / "keys")
    key = load_private_key(private)
    v1 = build("good", tmp_path / "v1", key, version=1)
    archive, _, _ = pack(build("good", tmp_path / "v2", key, version=2), tmp_path / "bundle.tar.gz")
    assets = Assets(v1, write_clip(tmp_path / "clip.mp4"))
    cfg = agent_config(assets, broker, tmp_path / "state", [source(assets)])
    cfg["model"]["public_keys"] = [public_key_base64(key.public_key())]
    cfg["updates"] = {"allow_http": True, "allow_private_addresses": True, "probation_s": 2,
                      "group": GROUP}  # fmt: skip
    config = write_config(tmp_path / "agent.json", cfg)
    rec = mqtt_recorder(broker, f"{BASE}/#")
    sims = SimFleet(broker.host, broker.port, 20, SimConfig(
        group=GROUP, fail_fraction=0.0, download_s=(0.05, 0.2), seed=3,
        public_keys=[load_public_key(public)],
    )).start(timeout_s=30)  # fmt: skip
    try:
        with running_agent(config), serving(archive.read_bytes()) as srv:
            assert rec.wait_for(lambda: any(m["state"] == "active" for m in rec.json(
                f"{BASE}/model")), WAIT_S)  # fmt: skip
            code = main(["fleet", "rollout", str(archive), "--group", GROUP, "--url-base",
                         srv.url.rsplit("/", 1)[0], "--canary", "3", "--batch", "8",
                         "--max-failures-pct", "10", "--key", str(private), "--timeout", "60s",
                         "--broker", f"{broker.host}:{broker.port}"])  # fmt: skip
            assert code == 0
            last = rec.json(f"{BASE}/model")[-1]
            assert (last["state"], last["version"]) == ("active", 2), rec.json(f"{BASE}/model")
            n = len(results(rec))
            assert rec.wait_for(lambda: len(results(rec)) >= n + 5, WAIT_S)
        assert wait_until(lambda: all(d.current["version"] == 2 for d in sims.devices), 10)
    finally:
        sims.stop()
    assert results(rec)[-1]["model"].endswith("@2")
