"""A message handed to paho while the link is down: QoS 1 is kept by paho and sent after the
reconnect, and the sender learns of its PUBACK; a delivery paho says it will never send is
handed again instead of killing the sender thread (seen in CI: "Message publish failed: The
client is not currently connected" raised from is_published, and no result after)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.config import MqttConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.publish.client import Message, MqttClient
from edge_agent.publish.sender import Delivery, Sender
from tests.helpers.mqtt import Broker
from tests.helpers.waiting import wait_until


def test_qos1_handed_over_while_the_link_is_down_is_acknowledged_after_it_returns(
    broker: Broker,
) -> None:
    cfg = MqttConfig(host=broker.host, port=broker.port, reconnect_min_delay_s=0.2,
                     reconnect_max_delay_s=0.5)  # fmt: skip
    will = Message("edgesight/dev1/status", b"offline", 1, True)
    client = MqttClient(cfg, "edgesight-delivery", lambda: will, StatsRegistry().publisher())
    client.start()
    try:
        assert wait_until(lambda: client.connected, 10)
        broker.stop()
        assert wait_until(lambda: not client.connected, 10)
        delivery = client.publish_tracked("edgesight/dev1/result", b"{}", 1, False)
        assert delivery is not None
        assert delivery.is_published() is False  # waiting, not an error
        assert client.publish_tracked("edgesight/dev1/result", b"{}", 0, False) is None
        broker.start()
        assert wait_until(delivery.is_published, 15)  # paho sent it, the broker acknowledged
    finally:
        client.close()


@dataclass
class _Entry:
    id: int
    topic: str = "t"
    payload: bytes = b"x"
    qos: int = 1
    retain: bool = False


class _Queue:
    """The outbox as the sender sees it, in memory."""

    def __init__(self, n: int) -> None:
        self.entries = {i: _Entry(i) for i in range(1, n + 1)}
        self.acked: list[int] = []

    def pending(self, after_id: int, limit: int) -> Sequence[_Entry]:
        return [e for i, e in sorted(self.entries.items()) if i > after_id][:limit]

    def ack(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.acked.append(i)
            self.entries.pop(i, None)

    def hold(self, through_id: int) -> None:
        pass


class _Link:
    """Hands back paho's own MQTTMessageInfo; the first one with the rc paho gives a publish
    it did not keep, the others acknowledged at once."""

    connected = True

    def __init__(self) -> None:
        self.handed: list[bytes] = []

    def publish_tracked(self, topic: str, payload: bytes, qos: int, retain: bool) -> Delivery:
        info = mqtt.MQTTMessageInfo(len(self.handed) + 1)
        if not self.handed:
            info.rc = MQTTErrorCode.MQTT_ERR_NO_CONN
        else:
            info._set_as_published()
        self.handed.append(payload)
        return info


def test_a_delivery_paho_will_not_send_is_handed_again_and_the_sender_lives() -> None:
    errors: list[BaseException] = []
    hook, threading.excepthook = threading.excepthook, lambda a: errors.append(a.exc_value)
    queue, link = _Queue(3), _Link()
    sender = Sender(queue, link)
    sender.start()
    try:
        assert wait_until(lambda: sorted(queue.acked) == [1, 2, 3], 10), queue.acked
    finally:
        sender.stop()
        threading.excepthook = hook
    assert errors == []
    assert len(link.handed) >= 4  # entry 1 handed twice
