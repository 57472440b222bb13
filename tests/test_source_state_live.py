"""Each source's state in the retained status, from a running agent over a real mosquitto: a
live camera that goes away makes the agent degraded (said once at WARNING) and its return
clears it at once; a flapping camera is coalesced. The camera is a fake live source that
sets its states as the real one does (sources.py reports them through the same interface)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.health.source_state import RECONNECTING, STREAMING, SourceStates
from edge_agent.health.stats import SourceMetrics, StatsRegistry
from edge_agent.pipeline import Agent
from edge_agent.types import Frame
from tests.helpers.agent_run import BASE, WAIT_S, Assets, agent_config, make_assets, statuses
from tests.helpers.mqtt import Broker, Recorder

STATUS = f"{BASE}/status"
SIZE = (160, 120)


class ScriptedCamera:
    """A live source at ~30 fps; ``away`` set: it says reconnecting (connection refused) and
    gives nothing, cleared: streaming again."""

    live = True

    def __init__(
        self, source_id: str, states: SourceStates, metrics: SourceMetrics, stop: threading.Event
    ) -> None:
        self.source_id, self.states, self.metrics = source_id, states, metrics
        self.away = threading.Event()
        self._stop = stop  # the agent's, as real sources share it

    def frames(self) -> Iterator[Frame]:
        image = np.full((SIZE[1], SIZE[0], 3), 60, np.uint8)
        seq = 0
        said = None  # states are said on a change only, as the real source does
        while not self._stop.is_set():
            if self.away.is_set():
                if said != RECONNECTING:
                    said = RECONNECTING
                    self.states.set(self.source_id, RECONNECTING, "connection refused")
                    self.metrics.reopens.inc()
                self._stop.wait(0.05)
                continue
            if said != STREAMING:
                said = STREAMING
                self.states.set(self.source_id, STREAMING)
            ts = time.time()
            self.states.frame(self.source_id, ts, *SIZE)
            self.metrics.frames_read.inc()
            yield Frame(image, self.source_id, seq, ts)
            seq += 1
            self._stop.wait(1 / 30)

    def close(self) -> None:
        self._stop.set()


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return make_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture
def camera_agent(
    tmp_path: Path, broker: Broker, assets: Assets
) -> Iterator[tuple[Agent, ScriptedCamera]]:
    cams: dict[str, ScriptedCamera] = {}
    stats = StatsRegistry()

    def factory(
        cfg: Any, stop: threading.Event, metrics: SourceMetrics, _states: Any
    ) -> ScriptedCamera:
        cams[cfg.id] = ScriptedCamera(cfg.id, stats.source_states, metrics, stop)
        return cams[cfg.id]

    sources = [{"id": "gate", "uri": "rtsp://127.0.0.1:8554/gate"}]
    cfg = AgentConfig.model_validate(agent_config(assets, broker, tmp_path / "state", sources))
    with Agent(cfg, source_factory=factory, stats=stats) as agent:
        yield agent, cams["gate"]


def _latest(rec: Recorder) -> dict[str, Any]:
    got = statuses(rec)
    return got[-1] if got else {}


def _gate(rec: Recorder) -> dict[str, Any]:
    return dict(_latest(rec).get("source_state", {}).get("gate", {}))


def test_a_camera_away_degrades_the_agent_until_it_is_back(
    broker: Broker, mqtt_recorder: Any, camera_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent")
    agent, camera = camera_agent
    rec = mqtt_recorder(broker, STATUS)
    assert rec.wait_for(lambda: _gate(rec).get("last_frame_ts") is not None, WAIT_S)
    gate = _gate(rec)
    assert _latest(rec)["state"] == "online" and _latest(rec)["sources"] == ["gate"]
    assert gate["state"] == "streaming" and gate["reason"] is None
    assert (gate["width"], gate["height"]) == SIZE
    assert set(gate) == {
        "state", "reason", "since", "last_frame_ts", "width", "height", "reopens",
        "frames_dropped",
    }  # fmt: skip

    camera.away.set()
    assert rec.wait_for(lambda: _latest(rec).get("state") == "degraded", WAIT_S)
    assert rec.wait_for(lambda: _gate(rec).get("state") == "reconnecting", WAIT_S)
    assert _gate(rec)["reason"] == "connection refused"
    assert agent.health.state == "degraded"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned.count("agent degraded: source gate reconnecting: connection refused") == 1

    camera.away.clear()  # back: online at once, no degraded_clear_s wait
    back = time.monotonic()
    assert rec.wait_for(lambda: _latest(rec).get("state") == "online", WAIT_S)
    assert time.monotonic() - back < 3.0  # generous; the clear delay (default 30 s) is not met
    assert rec.wait_for(lambda: _gate(rec).get("state") == "streaming", WAIT_S)
    assert _gate(rec)["reopens"] >= 1
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("source gate streaming again after") for m in infos)
    late = mqtt_recorder(broker, STATUS)  # retained: a newcomer gets the latest at once
    assert late.wait_for(lambda: bool(late.on(STATUS)), WAIT_S)
    assert statuses(late)[-1]["state"] == "online"


def test_a_flapping_camera_cannot_flood_the_broker(
    broker: Broker, mqtt_recorder: Any, camera_agent: Any
) -> None:
    agent, _camera = camera_agent
    rec = mqtt_recorder(broker, STATUS)
    assert rec.wait_for(lambda: _gate(rec).get("state") == "streaming", WAIT_S)
    time.sleep(1.2)  # past the coalescing interval of the first change
    rec.clear()
    states = agent.stats.source_states
    started = time.monotonic()
    for i in range(200):  # 200 changes in well under a second
        states.set("gate", "stalled" if i % 2 == 0 else "failed", f"flap {i}")
    flapped = time.monotonic() - started
    time.sleep(2.5)
    changed = [s for s in statuses(rec) if s["source_state"]["gate"]["state"] != "streaming"]
    assert changed, "no status was published for the changes"
    assert len(changed) <= 3 + flapped  # about one per second, not 200
    assert changed[-1]["source_state"]["gate"]["reason"] == "flap 199"  # ends on the latest


def test_state_changes_beside_status_publishes_never_deadlock(camera_agent: Any) -> None:
    """A state change reaches set_status under SourceStates' lock (the source's down/up flips
    the health) while the heartbeat builds the status under the publisher's lock."""
    agent, _camera = camera_agent
    done = threading.Event()

    def publish_status() -> None:
        while not done.is_set():
            agent.publisher.refresh_status()

    other = threading.Thread(target=publish_status, daemon=True)
    flapper = threading.Thread(
        target=lambda: [
            agent.stats.source_states.set("gate", "stalled" if i % 2 else "streaming")
            for i in range(500)
        ],
        daemon=True,
    )
    other.start()
    flapper.start()
    flapper.join(20)
    done.set()
    other.join(20)
    assert not flapper.is_alive() and not other.is_alive(), "deadlocked"
