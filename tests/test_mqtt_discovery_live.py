"""Home Assistant discovery from a running agent over a real mosquitto: the retained device
message passes HA's schema, HA's birth message brings it again, a zone removed while the agent
was stopped is removed from HA at the next start, and ``discovery: false`` sends nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.publish.announce import STATE_FILE
from tests.helpers.agent_run import (
    BASE,
    DEVICE,
    SOURCE,
    WAIT_S,
    Assets,
    agent_config,
    make_assets,
    online_run,
    requester,
    running_agent,
    source,
    write_config,
)
from tests.helpers.ha_schema import check_device_message
from tests.helpers.mqtt import Broker, Recorder

HA = "homeassistant"
CONFIG_TOPIC = f"{HA}/device/{DEVICE}/config"
#: Two zones over the clip's two blocks (normalised; the red one's box is 0.2-0.4).
ZONES = {
    "left": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
    "right": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]],
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return make_assets(tmp_path_factory.mktemp("assets"))


def zone_source(assets: Assets, zones: list[str]) -> dict[str, Any]:
    stages = [
        {"type": "counts"},
        {"type": "track"},
        {"type": "zones", "zones": [{"name": z, "polygon": ZONES[z]} for z in zones]},
    ]
    return source(assets, stages=stages)


def discovery(rec: Recorder) -> list[dict[str, Any]]:
    return rec.json(CONFIG_TOPIC)


def test_the_device_message_is_retained_and_valid_for_home_assistant(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state", sources=[zone_source(assets, ["left"])])
    with running_agent(write_config(tmp_path / "agent.yaml", cfg)):
        online_run(rec)
        late = mqtt_recorder(broker, f"{HA}/#")  # subscribes after the agent announced
        assert late.wait_for(lambda: len(late.on(CONFIG_TOPIC)) == 1, WAIT_S)
        (msg,) = late.on(CONFIG_TOPIC)
        assert msg.retain and msg.qos == 1
        components = check_device_message(json.loads(msg.payload))
        assert {
            f"{SOURCE}_count_red",
            f"{SOURCE}_zone_left_blue",
            f"{SOURCE}_fps",
            "model_version",
            "outbox_depth",
        } <= set(components)
        assert components[f"{SOURCE}_count_red"]["state_topic"] == f"{BASE}/{SOURCE}/count/red"
        assert components["outbox_depth"]["availability_topic"] == f"{BASE}/status"

        # Home Assistant (re)starts: its birth message asks for discovery again.
        with requester(broker) as req:
            req.client.publish(f"{HA}/status", b"online", qos=1).wait_for_publish(WAIT_S)
            assert late.wait_for(lambda: len(late.on(CONFIG_TOPIC)) == 2, WAIT_S)
            assert late.on(CONFIG_TOPIC)[1].payload == msg.payload
            # HA's will ("offline") asks for nothing: a ping answered after it shows that the
            # agent has read it, and no discovery message came in between.
            req.client.publish(f"{HA}/status", b"offline", qos=1).wait_for_publish(WAIT_S)
            assert req.request("ping")["ok"] is True
            assert late.wait_for(lambda: len(late.on(f"{HA}/status")) == 2, WAIT_S)
        assert len(late.on(CONFIG_TOPIC)) == 2


def test_a_zone_removed_while_stopped_is_removed_from_home_assistant(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, f"{HA}/#")
    status = mqtt_recorder(broker, f"{BASE}/status")
    state = tmp_path / "state"
    both = agent_config(assets, broker, state, sources=[zone_source(assets, ["left", "right"])])
    with running_agent(write_config(tmp_path / "agent.yaml", both)):
        run = online_run(status)
        assert rec.wait_for(lambda: len(discovery(rec)) == 1, WAIT_S)
    (before,) = discovery(rec)
    right = {c for c in before["cmps"] if c.startswith(f"{SOURCE}_zone_right_")}
    assert right == {f"{SOURCE}_zone_right_{label}" for label in ("red", "green", "blue")}
    assert (state / STATE_FILE).is_file()

    rec.clear()
    one = agent_config(assets, broker, state, sources=[zone_source(assets, ["left"])])
    with running_agent(write_config(tmp_path / "agent.yaml", one)):
        online_run(status, other_than=run)
        assert rec.wait_for(lambda: len(discovery(rec)) == 2, WAIT_S)
        removal, current = discovery(rec)
    assert [m.qos for m in rec.on(CONFIG_TOPIC)] == [1, 1]
    # first the removal: each zone-right entity as {"p": platform}, every other one as is
    assert {cid: removal["cmps"][cid] for cid in right} == {cid: {"p": "sensor"} for cid in right}
    kept = {cid: c for cid, c in removal["cmps"].items() if cid not in right}
    assert kept == current["cmps"]
    assert set(current["cmps"]) == set(before["cmps"]) - right
    for message in (removal, current):
        check_device_message(message)
    # the next start has nothing left to remove
    rec.clear()
    with running_agent(write_config(tmp_path / "agent.yaml", one)):
        assert rec.wait_for(lambda: len(discovery(rec)) == 1, WAIT_S)
    assert discovery(rec) == [current]


def test_discovery_off_publishes_nothing_for_home_assistant(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, "#")
    cfg = agent_config(assets, broker, tmp_path / "state", home_assistant={"discovery": False})
    with running_agent(write_config(tmp_path / "agent.yaml", cfg)), requester(broker) as req:
        online_run(rec)
        req.client.publish(f"{HA}/status", b"online", qos=1).wait_for_publish(WAIT_S)
        # One connection delivers in order: once the ping's reply is here, any discovery
        # message sent at connect or for the birth message would be here too.
        assert req.request("ping")["ok"] is True
        assert rec.wait_for(lambda: any(m.topic.startswith(req.inbox) for m in rec.messages))
    assert [m.topic for m in rec.messages if m.topic.startswith(f"{HA}/device/")] == []
    assert not (tmp_path / "state" / STATE_FILE).exists()
