"""The fleet tools' MQTT side: one MQTT 5 connection to an existing broker that watches every
device's retained model and status and sends (optionally signed) commands.

It lives apart from trainer/fleet.py so that the rollout logic there (batches, abort, desired
documents) reads without paho's callbacks, locks and sync markers in the way; trainer/fleet.py
re-exports these names, so callers import them from either module.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.publish.command_auth import sign_command
from edge_agent.publish.paho_support import describe_code, guarded
from trainer.errors import InputError

#: Longest wait for CONNACK + SUBACK, s.
CONNECT_TIMEOUT_S = 10.0
#: Longest wait for the broker to deliver retained messages behind a sync marker, s.
SYNC_TIMEOUT_S = 10.0
#: MQTT keepalive of the tool's connection, s.
KEEPALIVE_S = 30
#: A signed command's lifetime, s: long enough for a queued QoS 1 delivery, short against replay.
COMMAND_TTL_S = 300


class FleetError(InputError):
    """The broker, a device or the fleet did not do what the tool needs; the message says why."""


@dataclass(frozen=True)
class Connection:
    """Where the broker is and how to log in (the agent's mqtt section, in flags)."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    tls: bool = False


@dataclass
class Device:
    """The latest retained model and status one device published, as the tool saw them."""

    model: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    model_updates: int = 0  # model messages received so far: "after the command" is "> n"


class FleetClient:
    """One MQTT 5 connection that watches every device's model and status and sends commands.

    Constructors assign; ``start()`` connects and subscribes (STYLE 8). Callbacks only record
    under a lock; callers wait on the condition.
    """

    def __init__(self, conn: Connection, prefix: str = "edgesight") -> None:
        self.conn = conn
        self.prefix = prefix.rstrip("/")
        self.devices: dict[str, Device] = {}
        self.replies: dict[bytes, dict[str, Any]] = {}
        self.retained: dict[str, bytes] = {}
        #: Signs commands (docs/commands.md's envelope) when the devices require it.
        self.signer: Ed25519PrivateKey | None = None
        self.on_model: Callable[[str, dict[str, Any]], None] | None = None
        self._inbox = f"{self.prefix}/tools/{uuid.uuid4().hex[:12]}"
        self._cond = threading.Condition()
        self._synced: set[str] = set()
        self._ready = threading.Event()
        self._error = ""
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-trainer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = guarded("connect", self._on_connect)
        self.client.on_subscribe = guarded("subscribe", lambda *a: self._ready.set())
        self.client.on_message = guarded("message", self._on_message)

    def start(self) -> FleetClient:
        c = self.conn
        if c.username is not None:
            self.client.username_pw_set(c.username, c.password)
        if c.tls or c.ca_file:
            self.client.tls_set(
                ca_certs=str(c.ca_file) if c.ca_file else None,
                certfile=str(c.cert_file) if c.cert_file else None,
                keyfile=str(c.key_file) if c.key_file else None,
            )
            self.client.tls_insecure_set(c.insecure)
        try:
            self.client.connect(c.host, c.port, keepalive=KEEPALIVE_S)
        except OSError as exc:
            raise FleetError(f"cannot connect to the broker {c.host}:{c.port}: {exc}") from exc
        self.client.loop_start()
        if not self._ready.wait(CONNECT_TIMEOUT_S):
            self.close()
            why = self._error or f"no CONNACK/SUBACK within {CONNECT_TIMEOUT_S:g} s"
            raise FleetError(f"broker {c.host}:{c.port}: {why}")
        self.sync()
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> FleetClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        if rc.is_failure:
            self._error = f"connection refused: {describe_code(rc)}"
            return
        # QoS 0 for the fleet's retained state: a broker queues a bounded number of QoS 1
        # messages per client (mosquitto's max_queued_messages, 1000) and drops the rest, so
        # 1,000 devices' retained model + status at QoS 1 lost half of them, and the sync marker.
        client.subscribe(
            [(f"{self.prefix}/+/model", 0), (f"{self.prefix}/+/status", 0), (f"{self._inbox}/#", 1)]
        )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        with self._cond:
            if topic.startswith(f"{self._inbox}/sync/"):
                self._synced.add(topic.rsplit("/", 1)[1])
            elif topic.startswith(f"{self._inbox}/reply/"):
                corr = bytes(getattr(msg.properties, "CorrelationData", b"") or b"")
                self.replies[corr] = json_object(payload) or {"ok": False, "error": "bad reply"}
            else:
                self._record(topic, payload)
            self._cond.notify_all()

    def _record(self, topic: str, payload: bytes) -> None:
        if fleet_topic := topic.startswith(f"{self.prefix}/fleet/"):
            self.retained[topic] = payload
        rest = topic.removeprefix(f"{self.prefix}/")
        device, _, kind = rest.partition("/")
        data = json_object(payload)
        if fleet_topic or data is None or kind not in ("model", "status"):
            return
        entry = self.devices.setdefault(device, Device())
        if kind == "model":
            entry.model, entry.model_updates = data, entry.model_updates + 1
            if self.on_model is not None:
                self.on_model(device, data)
        else:
            entry.status = data

    def sync(self, extra_topic: str | None = None) -> None:
        """Return once the broker has delivered what it retained for our subscriptions (and
        ``extra_topic``): it queues them before a marker we publish afterwards."""
        if extra_topic:
            info = self.client.subscribe(extra_topic, qos=1)
            if info[0] != mqtt.MQTT_ERR_SUCCESS:
                raise FleetError(f"cannot subscribe to {extra_topic}: {describe_code(info[0])}")
        marker = uuid.uuid4().hex
        self.client.publish(f"{self._inbox}/sync/{marker}", b"", qos=1)
        if not self.wait(lambda: marker in self._synced, SYNC_TIMEOUT_S):
            raise FleetError(f"the broker did not echo a sync message within {SYNC_TIMEOUT_S} s")

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    def read_retained(self, topic: str) -> bytes | None:
        self.sync(topic)
        with self._cond:
            return self.retained.get(topic)

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        info = self.client.publish(topic, json.dumps(payload).encode(), qos=1, retain=retain)
        info.wait_for_publish(CONNECT_TIMEOUT_S)
        if not info.is_published():
            raise FleetError(f"the broker did not acknowledge the message on {topic}")

    def command(self, device: str, name: str, args: dict[str, Any] | None = None) -> bytes:
        """Send ``cmd/<name>`` to ``device``; its correlation data keys ``self.replies``."""
        corr = uuid.uuid4().hex[:16].encode()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{self._inbox}/reply/{corr.decode()}"
        props.CorrelationData = corr
        if self.signer is None:
            body = json.dumps({"id": corr.decode(), **(args or {})}).encode()
        else:  # devices with commands.public_keys take only signed envelopes
            seq = time.time_ns() // 1_000_000  # rises across runs without a counter on disk
            envelope = sign_command(
                self.signer,
                device=device,
                command=name,
                seq=seq,
                expires=int(time.time() + COMMAND_TTL_S),
                args=args,
                request_id=corr.decode(),
            )
            body = json.dumps(envelope).encode()
        self.client.publish(f"{self.prefix}/{device}/cmd/{name}", body, qos=1, properties=props)
        return corr

    def reply(self, corr: bytes) -> dict[str, Any] | None:
        with self._cond:
            return self.replies.get(corr)

    def snapshot(self) -> dict[str, Device]:
        with self._cond:
            return {k: Device(v.model, v.status, v.model_updates) for k, v in self.devices.items()}


def json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
