"""The paho client a config asks for, the MQTT session it keeps, and what paho's codes mean.

Split out of client.py so the connection class there reads as lifecycle, publishing and callbacks.

Protocol: MQTT 5 by default (``mqtt.protocol: "3.1.1"`` for a broker without it). 5 gives reason
codes the log can say in words ("Session taken over", "Bad user name or password"), session
expiry and request/response properties for commands. The session is persistent either way
(MQTT 5: no clean start, ``SessionExpiryInterval`` = ``mqtt.session_expiry_s``; 3.1.1: no clean
session), so the broker keeps our subscriptions and the commands sent to us while we are away.
"""

from __future__ import annotations

from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.config import MqttConfig
from edge_agent.publish.paho_support import configure_tls

#: ``mqtt.protocol`` -> paho's protocol constant.
PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


@dataclass(frozen=True)
class Message:
    """One message to publish: the last will, or the final message of close()."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def new_client(cfg: MqttConfig, client_id: str, queue_limit: int) -> mqtt.Client:
    """A paho client with protocol, session, credentials, TLS and queue limit set; no
    callbacks yet, not connecting yet."""
    v5 = cfg.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=PROTOCOLS[cfg.protocol],
        clean_session=None if v5 else False,  # 5 has clean start, given at connect
    )
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls is not None:
        configure_tls(client, cfg.tls, cfg.port)
    # Counts QoS 1 messages waiting for the broker (in flight or queued); beyond it
    # publish() returns MQTT_ERR_QUEUE_SIZE. Must be set before connecting.
    client.max_queued_messages_set(queue_limit)
    return client


def connect_async(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Ask paho to connect (once its loop runs), with the persistent session's properties."""
    if cfg.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        client.connect_async(
            cfg.host,
            cfg.port,
            keepalive=cfg.keepalive_s,
            clean_start=cfg.session_expiry_s == 0,
            properties=props,
        )
    else:
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)


def subscribe(client: mqtt.Client, protocol: str, subscriptions: list[tuple[str, int]]) -> None:
    """Subscribe to every (topic filter, QoS) again, as after each accepted CONNACK."""
    if protocol == "5":
        # Retain As Published: a retained command sent while we listen arrives marked
        # retained (and is ignored); plain subscriptions clear the flag.
        client.subscribe(
            [(t, SubscribeOptions(qos=q, retainAsPublished=True)) for t, q in subscriptions]
        )
    else:
        client.subscribe(subscriptions)


def reply_properties(protocol: str, correlation: bytes | None) -> Properties | None:
    """A command reply's PUBLISH properties: the request's correlation data (MQTT 5 only)."""
    if correlation is None or protocol != "5":
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = correlation
    return props


def set_will(client: mqtt.Client, will: Message) -> None:
    """The last will sent in the next CONNECT."""
    client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)


def kept(rc: MQTTErrorCode, qos: int) -> bool:
    """Whether paho kept a message it was handed (publish()'s rc): sent or queued.

    For QoS > 0 paho keeps the message in its out queue whatever the socket did (NO_CONN
    included) and resends it after reconnecting; only QUEUE_SIZE means it was not kept
    (client.py publish()). QoS 0 messages are kept only on SUCCESS.
    """
    if qos > 0:
        return rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
    return rc == MQTTErrorCode.MQTT_ERR_SUCCESS
