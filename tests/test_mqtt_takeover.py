"""A second client with this device's client id, against the real mosquitto (issue 18 item 7):
what the broker does, and that the agent says it once, as ERROR, and stops fighting."""

from __future__ import annotations

import logging
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import MqttConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.publish.client import Message, MqttClient
from edge_agent.publish.takeover import TAKEOVER_DROPS, TakeoverWatch
from tests.helpers.mqtt import Broker
from tests.helpers.waiting import wait_until

PROTOCOLS = ["5", "3.1.1"]


def _connections(broker: Broker, client_id: str) -> int:
    return broker.log().count(f" as {client_id} ")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mosquitto_closes_the_old_link_without_a_reason_and_paho_says_128(
    broker: Broker, protocol: str
) -> None:
    """Why the issue saw "reason code 128" on both agents: mosquitto 2.0.11 closes the old
    socket (no DISCONNECT, not even 142 on MQTT 5) and paho calls any lost link 128."""
    seen: list[tuple[int, bool]] = []
    clients = []
    for _ in range(2):
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="twin",
            protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        )
        c.on_disconnect = lambda _c, _u, flags, rc, _p: seen.append(
            (rc.value, flags.is_disconnect_packet_from_server)
        )
        c.reconnect_delay_set(60, 60)  # the first must not take it back during the test
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert wait_until(c.is_connected), f"client {len(clients)} never connected"
        clients.append(c)
    try:
        assert wait_until(lambda: bool(seen)), "the first client was never disconnected"
        assert seen == [(128, False)]
        assert "already connected, closing old connection" in broker.log()
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_agents_with_one_device_id_say_so_once_and_stop_fighting(
    broker: Broker, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = MqttConfig(
        host=broker.host,
        port=broker.port,
        protocol=protocol,
        reconnect_min_delay_s=0.2,
        reconnect_max_delay_s=0.5,
    )

    def agent_client() -> MqttClient:
        will = Message("edgesight/dev1/status", b"offline", 1, True)
        client = MqttClient(
            cfg, "edgesight-dev1", lambda: will, StatsRegistry().publisher(), device_id="dev1"
        )
        client.start()
        return client

    caplog.set_level(logging.INFO, logger="edge_agent.publish.client")
    first = agent_client()
    assert wait_until(lambda: first.connected)
    second = agent_client()
    try:
        assert wait_until(lambda: first.takeover.taken_over or second.takeover.taken_over, 30)
        declared = time.time()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        text = errors[0].getMessage()
        assert "another client took this device's MQTT session (client id 'edgesight-dev1')" in (
            text
        )
        assert "is a second agent running with device_id 'dev1'?" in text
        # One backs off, the other keeps the session: no fight every 2 s any more.
        settled = _connections(broker, "edgesight-dev1")
        time.sleep(4.0)
        assert _connections(broker, "edgesight-dev1") - settled <= 1
        assert first.takeover.taken_over != second.takeover.taken_over
        assert wait_until(lambda: first.connected or second.connected)
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
        late = [r for r in caplog.records if r.created > declared and "unreachable" in r.msg]
        assert late == []
    finally:
        first.close(timeout_s=1)
        second.close(timeout_s=1)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _watch() -> tuple[TakeoverWatch, Clock]:
    clock = Clock()
    return TakeoverWatch("edgesight-d", "d", reconnect_max_delay_s=2, clock=clock), clock


def _short_link(watch: TakeoverWatch, clock: Clock, **kw: Any) -> float | None:
    watch.connected()
    clock.t += 1
    return watch.dropped(kw.get("code", 128), kw.get("from_server", False))


def test_a_broker_that_goes_away_is_not_a_takeover() -> None:
    """A restarting broker drops the link, then refuses the reconnect: never a takeover."""
    watch, clock = _watch()
    for _ in range(TAKEOVER_DROPS * 3):
        assert _short_link(watch, clock) is None
        watch.attempt_failed()
    assert not watch.taken_over


def test_short_links_in_a_row_are_a_takeover_until_one_lasts() -> None:
    watch, clock = _watch()
    waits = [_short_link(watch, clock) for _ in range(TAKEOVER_DROPS + 1)]
    assert waits[: TAKEOVER_DROPS - 1] == [None] * (TAKEOVER_DROPS - 1)
    assert waits[-2] == watch.first_wait_s and waits[-1] == 2 * watch.first_wait_s
    assert watch.taken_over and watch.count == 1
    watch.connected()
    clock.t += watch.short_s
    assert watch.dropped(128, False) is None  # the other agent stopped: an ordinary drop
    assert not watch.taken_over


def test_reason_142_from_the_broker_is_believed_at_once() -> None:
    watch, clock = _watch()
    assert _short_link(watch, clock, code=142, from_server=True) == watch.first_wait_s
    assert watch.taken_over
