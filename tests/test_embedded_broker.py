"""The embedded amqtt broker: real MQTT clients, loopback only, a clean start and close; and the
probe that tells a broker from a closed port or another service."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from edge_agent.demo.broker import (
    BrokerUnavailable,
    EmbeddedBroker,
    free_port,
    port_is_free,
    probe_mqtt,
)
from tests.helpers.net import listeners, require_amqtt


@pytest.fixture
def embedded() -> Iterator[EmbeddedBroker]:
    require_amqtt()
    broker = EmbeddedBroker(port=0)
    broker.start()
    yield broker
    broker.close()


def test_publish_subscribe_qos1_with_retain(embedded, mqtt_recorder):
    live = mqtt_recorder(embedded, "t/#")  # duck-types conftest's Broker: host and port
    publisher = mqtt_recorder(embedded, "unused")
    info = publisher.client.publish("t/a", b"kept", qos=1, retain=True)
    info.wait_for_publish(timeout=5)
    assert info.is_published()
    assert live.wait_for(lambda: live.on("t/a"))
    message = live.on("t/a")[0]
    assert (message.payload, message.qos, message.retain) == (b"kept", 1, False)
    late = mqtt_recorder(embedded, "t/#")  # subscribes after the publish: gets it retained
    assert late.wait_for(lambda: late.on("t/a"))
    assert late.on("t/a")[0].retain and late.on("t/a")[0].payload == b"kept"


def test_bound_to_loopback_only_and_close_frees_the_port():
    require_amqtt()
    port = free_port()
    with EmbeddedBroker("127.0.0.1", port) as broker:
        assert broker.port == port and broker.url == f"mqtt://127.0.0.1:{port}"
        assert listeners(port) == ["0100007F"], listeners(port)
        assert probe_mqtt("127.0.0.1", port) is None
    assert listeners(port) == []
    assert probe_mqtt("127.0.0.1", port) == "connection refused"
    assert port_is_free("127.0.0.1", port)
    broker.close()  # twice is fine


def test_refuses_non_loopback_hosts_and_bad_ports():
    for host in ("0.0.0.0", "192.168.1.10", "localhost", ""):
        with pytest.raises(ValueError, match="must be a loopback IP address"):
            EmbeddedBroker(host, 1883)
    with pytest.raises(ValueError, match=r"port must be in 0..65535, but got 70000"):
        EmbeddedBroker("127.0.0.1", 70000)


def test_port_in_use_is_a_clear_error(embedded):
    with pytest.raises(BrokerUnavailable, match=rf"127.0.0.1:{embedded.port} is in use"):
        EmbeddedBroker("127.0.0.1", embedded.port).start()


def test_missing_amqtt_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # import raises ImportError
    with pytest.raises(BrokerUnavailable, match=r"pip install 'edgesight\[demo\]'"):
        EmbeddedBroker().start()


def _one_shot_server(reply: bytes) -> tuple[int, threading.Thread]:
    """A TCP server on a free port that answers the first client with ``reply`` and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, name="fake-server", daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "gave no MQTT answer"),
        (b"\x20\x02\x00\x05", "not authorized (CONNACK code 5)"),
        (b"\x20\x02\x00\x04", "bad user name or password (CONNACK code 4)"),
    ],
)
def test_probe_tells_other_services_and_refusals(reply, expected):
    port, thread = _one_shot_server(reply)
    assert expected in (probe_mqtt("127.0.0.1", port) or "")
    thread.join(5)


def test_probe_accepts_a_real_mosquitto(broker):
    assert probe_mqtt(broker.host, broker.port) is None
