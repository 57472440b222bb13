"""Fleet tools against a real mosquitto and simulated devices (tools/fleet_sim.py): push to a
group (a signed desired document, seq + 1) and to a device, fleet status, and the staged
rollout that completes, or aborts and rolls back the devices that went active."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.bundle.signing import load_private_key
from edge_agent.updates.desired import verify_desired
from tests.helpers.models import classifier_bundle
from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.waiting import wait_until
from tools.fleet_sim import SimConfig, SimFleet
from trainer.cli import main
from trainer.fleet import bundle_info
from trainer.fleet_cli import duration
from trainer.signing_cli import keygen, pack_bundle

GROUP = "lab"
URL_BASE = "https://models.example/bundles"
#: Simulated download delays, s: quick, but long enough that devices overlap.
DOWNLOAD_S = (0.05, 0.2)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A real bundle, version 2 (the simulated devices run version 1)."""
    folder = classifier_bundle(tmp_path / "bundle", name="sim-model", version=2)
    (tmp_path / "srv").mkdir()
    return pack_bundle(folder, tmp_path / "srv" / "sim-model-2.tar.gz")


def sims(broker: Broker, n: int, fail: float, pub: Path) -> SimFleet:
    from edge_agent.bundle.signing import load_public_key

    cfg = SimConfig(group=GROUP, fail_fraction=fail, download_s=DOWNLOAD_S, seed=1,
                    public_keys=[load_public_key(pub)])  # fmt: skip
    return SimFleet(broker.host, broker.port, n, cfg).start(timeout_s=30)


def cli(broker: Broker, *args: str) -> int:
    return main([*args, "--broker", f"{broker.host}:{broker.port}"])


def desired(rec: Recorder) -> list[dict]:
    return rec.json(f"edgesight/fleet/{GROUP}/desired")


def test_duration_units():
    assert duration("90") == 90 and duration("30m") == 1800 and duration("7d") == 7 * 86400


def test_push_group_publishes_a_verifiable_desired_doc_with_seq_plus_one(broker, keys, archive):
    rec = Recorder(broker, "edgesight/fleet/#", persistent_session=False)
    try:
        args = ["push", str(archive), "--url-base", URL_BASE, "--group", GROUP,
                "--key", str(keys[0]), "--expires-in", "1h"]  # fmt: skip
        assert cli(broker, *args) == 0
        assert cli(broker, *args) == 0
        assert rec.wait_for(lambda: len(desired(rec)) == 2)
    finally:
        rec.close()
    msgs = rec.on(f"edgesight/fleet/{GROUP}/desired")
    assert all(m.qos == 1 for m in msgs)
    pub = load_private_key(keys[0]).public_key()
    docs = [verify_desired(m.payload, [pub]) for m in msgs]
    assert [d.seq for d in docs] == [1, 2]
    assert docs[1].url == f"{URL_BASE}/sim-model-2.tar.gz"
    assert (docs[1].name, docs[1].version, docs[1].size) == ("sim-model", 2, archive.stat().st_size)
    assert 3590 <= docs[1].expires - docs[1].issued <= 3600
    # retained: a late subscriber gets the newest
    late = Recorder(broker, f"edgesight/fleet/{GROUP}/desired", persistent_session=False)
    try:
        assert late.wait_for(lambda: len(desired(late)) == 1)
        assert late.messages[0].retain and desired(late)[0]["seq"] == 2
    finally:
        late.close()


def test_push_group_needs_a_key(broker, archive, capsys):
    assert cli(broker, "push", str(archive), "--url-base", URL_BASE, "--group", GROUP) == 2
    assert "--key" in capsys.readouterr().err


def test_push_device_reaches_active_and_status_lists_the_fleet(broker, keys, archive, capsys):
    fleet = sims(broker, 3, 0.0, keys[1])
    try:
        code = cli(broker, "push", str(archive), "--url-base", URL_BASE, "--device", "sim-0001",
                   "--timeout", "20s")  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0, out
        for state in ("downloading", "verifying", "staged", "trial", "active"):
            assert f"sim-0001: {state}" in out
        assert fleet.devices[1].current["version"] == 2
        assert cli(broker, "fleet", "status", "--group", GROUP) == 0
        table = capsys.readouterr().out.splitlines()
    finally:
        fleet.stop()
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert sorted(rows) == ["sim-0000", "sim-0001", "sim-0002"]
    assert rows["sim-0001"][1:5] == [GROUP, "active", "sim-model@2", "online"]
    assert rows["sim-0000"][3] == "sim-model@1"
    assert table[-1] == "3 devices: active 3"


def test_push_device_reports_a_rejection(broker, keys, archive, capsys):
    fleet = sims(broker, 2, 1.0, keys[1])  # sim-0000 rejects, sim-0001 rolls back
    try:
        for dev, state in (("sim-0000", "rejected"), ("sim-0001", "rolled_back")):
            code = cli(broker, "push", str(archive), "--url-base", URL_BASE, "--device", dev)
            assert code == 1
            assert f"{dev}: {state} after" in capsys.readouterr().out
    finally:
        fleet.stop()


def last_model(rec: Recorder, device: str) -> dict:
    return rec.json(f"edgesight/{device}/model")[-1]


def rollout(broker: Broker, archive: Path, key: Path, fail_pct: str = "20") -> int:
    return cli(broker, "fleet", "rollout", str(archive), "--group", GROUP, "--url-base",
               URL_BASE, "--canary", "2", "--batch", "6", "--max-failures-pct", fail_pct,
               "--key", str(key), "--timeout", "20s")  # fmt: skip


def test_rollout_aborts_and_rolls_back_the_devices_that_went_active(broker, keys, archive, capsys):
    fleet = sims(broker, 20, 0.5, keys[1])
    rec = Recorder(broker, "edgesight/#", persistent_session=False)
    try:
        assert rollout(broker, archive, keys[0]) == 1
        out = capsys.readouterr().out
        models = [(m.topic.split("/")[1], json.loads(m.payload)) for m in rec.messages
                  if m.topic.endswith("/model")]  # fmt: skip
        went_active = {dev for dev, m in models if m["state"] == "active" and m["version"] == 2}
        assert went_active, out  # some good devices updated before the abort
        assert wait_until(lambda: all(d.current["version"] == 1 for d in fleet.devices), 10)
        assert {d.id for d in fleet.devices if d.state == "rolled_back" and d.previous
                and d.previous["version"] == 2} == went_active  # fmt: skip
        tried = sum(1 for d in fleet.devices if d.previous or d.state != "active")
        assert tried < 20, "the rollout went on past the abort"
        assert "ABORTED" in out and "nothing published" in out
        assert desired(rec) == []
        assert rec.wait_for(lambda: all(last_model(rec, d)["reason"] == "rolled back by command"
                                        for d in went_active))  # fmt: skip
    finally:
        rec.close()
        fleet.stop()


def test_rollout_completes_and_publishes_the_group_doc(broker, keys, archive, capsys):
    fleet = sims(broker, 20, 0.0, keys[1])
    rec = Recorder(broker, f"edgesight/fleet/{GROUP}/desired", persistent_session=False)
    try:
        assert rollout(broker, archive, keys[0], "0") == 0, capsys.readouterr().out
        assert all(d.current["version"] == 2 and d.state == "active" for d in fleet.devices)
        assert rec.wait_for(lambda: len(desired(rec)) == 1)
        doc = verify_desired(rec.messages[0].payload, [load_private_key(keys[0]).public_key()])
        assert (doc.group, doc.seq, doc.version) == (GROUP, 1, 2)
        assert "tried 20 (active 20)" in capsys.readouterr().out
    finally:
        rec.close()
        fleet.stop()


def test_a_late_joiner_reconciles_to_the_desired_doc(broker, keys, archive):
    assert cli(broker, "push", str(archive), "--url-base", URL_BASE, "--group", GROUP,
               "--key", str(keys[0])) == 0  # fmt: skip
    fleet = sims(broker, 3, 0.0, keys[1])
    try:
        assert wait_until(lambda: all(d.current["version"] == 2 for d in fleet.devices), 10)
        assert {d.desired_seq for d in fleet.devices} == {1}
    finally:
        fleet.stop()


def test_signed_commands_pass_the_devices_check(broker, keys, archive, tmp_path):
    from edge_agent.publish.command_auth import CommandAuth

    rec = Recorder(broker, "edgesight/shelf-01/cmd/#", persistent_session=False)
    try:
        code = cli(broker, "push", str(archive), "--url-base", URL_BASE, "--device", "shelf-01",
                   "--key", str(keys[0]), "--sign-commands", "--timeout", "1")  # fmt: skip
        assert code == 1  # nobody answered
        assert rec.wait_for(lambda: len(rec.messages) == 1)
    finally:
        rec.close()
    envelope = json.loads(rec.messages[0].payload)
    auth = CommandAuth("shelf-01", [keys[1]], tmp_path / "seq.json")
    verified = auth.check("update_model", envelope)
    assert verified.seq > 0
    assert envelope["args"]["sha256"] == bundle_info(archive).sha256
