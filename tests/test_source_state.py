"""Source states into health and payloads, without threads of the agent: SourceHealth holds the
agent degraded while a live source is down and logs it once; the status and stats payloads
carry each source's state beside its counters."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from edge_agent.health.source_state import SourceStates
from edge_agent.health.state import HealthState
from edge_agent.health.stats import StatsRegistry
from edge_agent.health.system import SystemReadings
from edge_agent.pipeline.source_health import SourceHealth, StatusLink
from edge_agent.publish.payloads import encode, source_states_payload, status_payload
from edge_agent.publish.stats_payload import StatsReporter


class Pokes(StatusLink):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def poke(self) -> None:
        self.n += 1


def wired(live: tuple[str, ...] = ("gate",)) -> tuple[SourceStates, HealthState, list[str], Pokes]:
    states, told, link = SourceStates(clock=lambda: 100.0), [], Pokes()
    health = HealthState(told.append, clear_after_s=30.0)
    SourceHealth(states, health, live, link)
    return states, health, told, link


def test_a_live_source_down_holds_degraded_until_it_streams(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    states, health, told, link = wired()
    states.set("gate", "starting")
    states.set("gate", "streaming")
    states.set("gate", "stalled", "no frame for 5 s")
    states.set("gate", "reconnecting", "connection refused")  # still down: no new warning
    states.set("gate", "failed", "not found (RTSP 404)")
    assert told == ["degraded"] and health.held() == {"sources": "source(s) gate down"}
    states.set("gate", "streaming")
    assert told == ["degraded", "online"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["agent degraded: source gate stalled: no frame for 5 s"]
    assert any("source gate streaming again after" in r.getMessage() for r in caplog.records)
    assert link.n == 6  # every change asks for a status


def test_only_live_sources_count_and_all_must_be_back() -> None:
    states, health, told, _link = wired(live=("gate", "yard"))
    states.set("clip", "failed", "no such file")  # a file source: not a camera outage
    assert told == []
    states.set("gate", "reconnecting")
    states.set("yard", "stalled")
    states.set("gate", "streaming")
    assert health.state == "degraded" and health.held() == {"sources": "source(s) yard down"}
    states.set("yard", "ended")
    assert told == ["degraded", "online"]


def test_status_payload_keeps_sources_and_adds_source_state() -> None:
    reg = StatsRegistry()
    reg.source_states.set("gate", "reconnecting", "connection refused")
    reg.source_states.frame("gate", 12.3456, 640, 480)
    reg.source("gate").reopens.inc(2)
    reg.source("gate").dropped_stale.inc(3)
    reg.source("gate").frames_drained.inc(4)
    reg.source("gate").dropped_fps_limit.inc(100)  # by design: not a loss
    states = source_states_payload(reg.source_states.snapshot(), reg.snapshot()["source"])
    payload = status_payload("degraded", 1.0, "v", None, ["gate"], source_state=states)
    assert payload["sources"] == ["gate"]
    gate = payload["source_state"]["gate"]
    assert gate["state"] == "reconnecting" and gate["reason"] == "connection refused"
    assert (gate["width"], gate["height"], gate["last_frame_ts"]) == (640, 480, 12.346)
    assert (gate["reopens"], gate["frames_dropped"]) == (2, 7)
    encode(payload)  # valid JSON


def test_stats_carry_each_source_state_beside_its_counters() -> None:
    reg = StatsRegistry()
    reg.source("gate").frames_read.inc(10)
    reg.source("gate").frames_drained.inc(2)
    reg.source_states.set("gate", "stalled", "no frame for 5 s")
    reg.publisher()
    rep = StatsReporter(reg, "run-1", system=lambda: SystemReadings(1, 1, None))
    link: dict[str, Any] = {"session_taken_over": False, "takeovers": 0}
    payload = rep.payload(None, link=lambda: link)
    gate = payload["sources"]["gate"]
    assert gate["state"] == "stalled" and gate["reason"] == "no frame for 5 s"
    assert gate["frames_read"] == 10 and gate["frames_drained"] == 2  # the counters stay
    assert gate["frames_dropped"] == 2 and gate["reopens"] == 0
    assert payload["mqtt"]["session_taken_over"] is False and payload["mqtt"]["takeovers"] == 0


def test_a_source_with_no_state_yet_has_the_same_keys_as_null() -> None:
    reg = StatsRegistry()
    reg.source("gate").dropped_stale.inc(5)
    rep = StatsReporter(reg, "run-1", system=lambda: SystemReadings(1, 1, None))
    reg.source_states.set("yard", "streaming")
    reg.source("yard")
    sources = rep.payload(None)["sources"]
    assert set(sources["gate"]) == set(sources["yard"])
    assert sources["gate"]["state"] is None and sources["gate"]["frames_dropped"] == 5
