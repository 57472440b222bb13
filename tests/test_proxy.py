"""FaultProxy between a paho client and a real mosquitto: it forwards faithfully, and each fault
does to the client what the field would (tests/helpers/proxy.py). Also Broker.kill()."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.proxy import FaultProxy

#: Short keepalive so a silently dead link is noticed within seconds (paho: after 2 x this).
KEEPALIVE_S = 2
#: Longest wait for anything that should happen, s (a bound on a wait, not an assertion).
WAIT_S = 15.0


class Probe:
    """A paho client that counts its connects and keeps its disconnect reasons and messages."""

    def __init__(self, host: str, port: int, client_id: str = "", clean: bool = True) -> None:
        self.connects = 0
        self.session_present: list[bool] = []
        self.disconnects: list[str] = []
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:10]}",
            clean_session=clean,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subacks = 0
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self.host, self.port = host, port
        self.topics: list[str] = []

    def start(self, *topics: str) -> Probe:
        self.topics = list(topics)
        self.client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        ready = self.wait(lambda: self.connects == 1 and self.subacks == len(self.topics))
        assert ready, f"the probe did not connect and subscribe to {self.topics}"
        return self

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        with self._cond:
            self.connects += 1
            self.session_present.append(bool(flags.session_present))
            self._cond.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self._cond:
            self.disconnects.append(rc.getName())
            self._cond.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, _rc: Any, _p: Any) -> None:
        with self._cond:
            self.subacks += 1
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def proxy(broker: Broker) -> Iterator[FaultProxy]:
    with FaultProxy(broker.host, broker.port) as started:
        yield started
    assert not [t for t in threading.enumerate() if t.name.startswith("fault-proxy")]


@pytest.fixture
def probes() -> Iterator[Callable[..., Probe]]:
    made: list[Probe] = []

    def factory(host: str, port: int, *topics: str, **kwargs: Any) -> Probe:
        probe = Probe(host, port, **kwargs)
        made.append(probe)
        return probe.start(*topics)

    yield factory
    for probe in made:
        probe.close()


def test_forwards_both_ways_intact(proxy: FaultProxy, probes: Callable[..., Probe]) -> None:
    big = os.urandom(3 * 1024 * 1024)  # larger than any socket buffer: partial sends happen
    probe = probes("127.0.0.1", proxy.port, "t/#")
    probe.publish("t/big", big)
    assert probe.wait(lambda: len(probe.messages) == 1)
    assert probe.messages == [("t/big", big)]
    assert (proxy.connections, proxy.active) == (1, 1)


def test_reset_drops_the_link_and_the_client_reconnects(
    broker: Broker,
    proxy: FaultProxy,
    probes: Callable[..., Probe],
    mqtt_recorder: Callable[..., Recorder],
) -> None:
    watcher = mqtt_recorder(broker, "t/#")  # straight to the broker
    probe = Probe("127.0.0.1", proxy.port)
    probe.client.will_set("t/will", b"gone", qos=1)
    probe.start()
    try:
        proxy.reset()
        assert probe.wait(lambda: probe.connects == 2)
        # The client saw a lost connection, and the broker an unclean one: it sent the will.
        assert probe.disconnects == ["Unspecified error"]
        assert watcher.wait_for(lambda: bool(watcher.on("t/will")))
        assert watcher.on("t/will")[0].payload == b"gone"
        assert proxy.connections == 2
        probe.publish("t/after", b"1")
        assert watcher.wait_for(lambda: bool(watcher.on("t/after")))
    finally:
        probe.close()


def test_reset_sends_rst_and_keeps_accepting(broker: Broker, proxy: FaultProxy) -> None:
    first = socket.create_connection(("127.0.0.1", proxy.port))
    assert _eventually(lambda: proxy.active == 1)
    proxy.reset()
    with first, pytest.raises(ConnectionResetError):
        first.recv(1)
    with socket.create_connection(("127.0.0.1", proxy.port)):
        assert _eventually(lambda: proxy.active == 1)
    assert proxy.connections == 2


@pytest.mark.parametrize("death", ["stop", "kill"])
def test_broker_restart_behind_the_proxy(
    broker: Broker, proxy: FaultProxy, probes: Callable[..., Probe], death: str
) -> None:
    """The broker's end of each link closing reaches the client; while the broker is down
    the client's connects fail at once; after the restart it reconnects through the proxy."""
    probe = probes("127.0.0.1", proxy.port, "t/#")
    getattr(broker, death)()
    assert probe.wait(lambda: bool(probe.disconnects))
    assert probe.wait(lambda: proxy.connections >= 3)  # retries, each reset for want of a broker
    assert probe.connects == 1
    broker.start()
    assert probe.wait(lambda: probe.connects == 2 and probe.subacks == 2)
    probe.publish("t/again", b"1")
    assert probe.wait(lambda: ("t/again", b"1") in probe.messages)


def test_blackhole_is_noticed_only_by_keepalive(
    broker: Broker,
    proxy: FaultProxy,
    probes: Callable[..., Probe],
    mqtt_recorder: Callable[..., Recorder],
) -> None:
    watcher = mqtt_recorder(broker, "t/#")
    probe = probes("127.0.0.1", proxy.port, "t/in")
    sender = probes(broker.host, broker.port)  # straight to the broker
    proxy.blackhole(True)
    probe.client.publish("t/out", b"into the hole", qos=1)
    sender.publish("t/in", b"into the hole")
    assert probe.wait(lambda: bool(probe.disconnects))
    assert probe.disconnects[0] == "Keep alive timeout"  # later ones: retries in the hole
    # Nothing crossed while the client still thought the link alive, in either direction.
    assert watcher.on("t/out") == []
    assert probe.messages == []
    # The client keeps trying; its new connections go nowhere while the hole lasts.
    assert probe.wait(lambda: proxy.connections >= 2)
    assert probe.connects == 1
    proxy.blackhole(False)
    assert probe.wait(lambda: probe.connects == 2)
    probe.publish("t/out", b"after")
    assert watcher.wait_for(lambda: b"after" in [m.payload for m in watcher.on("t/out")])


def test_refuse_blocks_reconnects_until_lifted(
    broker: Broker,
    proxy: FaultProxy,
    probes: Callable[..., Probe],
    mqtt_recorder: Callable[..., Recorder],
) -> None:
    watcher = mqtt_recorder(broker, "t/#")
    probe = probes("127.0.0.1", proxy.port)
    proxy.refuse(True)
    proxy.reset()
    assert probe.wait(lambda: proxy.refused >= 3)
    assert (probe.connects, proxy.active) == (1, 0)
    proxy.refuse(False)
    assert probe.wait(lambda: probe.connects == 2)
    assert proxy.connections == proxy.refused + 2
    probe.publish("t/back", b"1")
    assert watcher.wait_for(lambda: bool(watcher.on("t/back")))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stop_resets_clients_and_leaks_no_thread_or_socket(broker: Broker) -> None:
    threads, fds = threading.active_count(), _open_fds()
    proxy = FaultProxy(broker.host, broker.port).start()
    clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(2)]
    proxy.blackhole(True)  # and one held in the hole, never connected upstream
    clients.append(socket.create_connection(("127.0.0.1", proxy.port)))
    clients[0].sendall(b"\x10")  # half an MQTT CONNECT: the link is busy, not idle
    assert _eventually(lambda: proxy.active == 3)
    proxy.stop()
    proxy.stop()  # idempotent
    for client in clients:
        with pytest.raises(ConnectionResetError):
            client.recv(1)
        client.close()
    assert (threading.active_count(), _open_fds()) == (threads, fds)


def _eventually(predicate: Callable[[], bool]) -> bool:
    """Wait for a state change on the proxy's thread (it accepts in its own time)."""
    event = threading.Event()
    for _ in range(int(WAIT_S / 0.02)):
        if predicate():
            return True
        event.wait(0.02)
    return predicate()


@pytest.mark.parametrize("port", [0, 65536, "1883", None])
def test_bad_target_port_is_named(port: Any) -> None:
    with pytest.raises(ValueError, match=r"target_port must be an int in 1\.\.65535, got"):
        FaultProxy("127.0.0.1", port)


def test_faults_before_start_say_so() -> None:
    proxy = FaultProxy("127.0.0.1", 1883)
    with pytest.raises(RuntimeError, match="not started; call start"):
        proxy.reset()
    with pytest.raises(RuntimeError, match="no port before start"):
        _ = proxy.port


@pytest.mark.parametrize("death", ["stop", "kill"])
def test_kill_loses_what_a_clean_stop_saves(persistent_broker: Broker, death: str) -> None:
    """mosquitto writes its persistence file on a clean exit (and on autosave), so SIGKILL
    loses the sessions and the QoS 1 messages queued for them since the last save."""
    keeper = Probe(persistent_broker.host, persistent_broker.port, "keeper", clean=False)
    keeper.start("q/#")
    keeper.close()  # the session stays; what is published now is queued for it
    sender = Probe(persistent_broker.host, persistent_broker.port).start()
    for n in range(3):
        sender.publish("q/x", str(n).encode())
    sender.close()
    getattr(persistent_broker, death)()
    persistent_broker.start()
    again = Probe(persistent_broker.host, persistent_broker.port, "keeper", clean=False)
    again.start()  # no topics: only a kept session can deliver anything
    try:
        if death == "stop":
            assert again.session_present == [True]
            assert again.wait(lambda: len(again.messages) == 3)
            assert [p for _, p in again.messages] == [b"0", b"1", b"2"]
        else:
            assert again.session_present == [False]
            again.publish("q/x", b"marker")  # not subscribed: an empty round trip
            assert again.messages == []
    finally:
        again.close()
