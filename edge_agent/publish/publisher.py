"""Publish results, counts and device status to an MQTT broker (paho-mqtt 2.x).

The broker is an environment fault source like a camera: it may be down when the agent starts or
go away at any time. Nothing here raises for that. paho's network thread (``loop_start``)
reconnects with exponential backoff, QoS 1 messages wait in paho's in-memory queue meanwhile, one
warning is logged per outage and the state shows in :attr:`MqttPublisher.connected` and
:attr:`MqttPublisher.stats`.

Protocol: MQTT 3.1.1 with a clean session. Every broker we target speaks it (mosquitto, EMQX,
HiveMQ, AWS IoT, amqtt, which has no 5.0); we need nothing from 5.0 yet. The clean session means
the broker keeps nothing for us between connections: what was not delivered is resent by paho from
memory, and subscriptions (commands, later) are renewed in ``on_connect``.

First connection: ``loop_start`` runs ``loop_forever(retry_first_connection=True)``
(paho/mqtt/client.py ``_thread_main``, paho-mqtt 2.2), so a broker that is down at start is
retried by paho itself with the ``reconnect_delay_set`` backoff; we add no thread of our own.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig, TlsConfig
from edge_agent.publish import payloads, topics
from edge_agent.publish.topics import Topics
from edge_agent.types import Result

log = logging.getLogger(__name__)

#: MQTT 3.1.1: see the module docstring for why not 5.0.
PROTOCOL = mqtt.MQTTv311
#: QoS per topic, from the contract in DESIGN.md.
STATUS_QOS = 1
RESULT_QOS = 1
COUNT_QOS = 1
#: Default client id is this prefix plus the device id.
CLIENT_ID_PREFIX = "edgesight-"
#: How long close() waits by default for the broker to acknowledge the "offline" status, s.
CLOSE_TIMEOUT_S = 5.0
#: The plain-TCP MQTT port; TLS on it is almost always a configuration mistake (TLS uses 8883).
PLAIN_MQTT_PORT = 1883


def describe_code(code: ReasonCode | MQTTErrorCode | int) -> str:
    """The one place where paho reason and return codes become text for logs and errors."""
    if isinstance(code, ReasonCode):
        return f"{code.getName()} (reason code {code.value})"
    try:
        err = MQTTErrorCode(code)
    except ValueError:
        return f"unknown paho code {code!r}"
    return f"{mqtt.error_string(err).rstrip('.')} ({err.name})"


def guarded(name: str, func: Callable[..., None]) -> Callable[..., None]:
    """Wrap a paho callback so an exception in it is logged and swallowed.

    paho re-raises callback exceptions unless ``suppress_exceptions`` is set, which ends the
    network thread: no more reconnects, no more publishing, and nothing says so.
    """

    def callback(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            log.exception("error in MQTT %s callback (ignored, the network thread goes on)", name)

    callback.__name__ = f"guarded_{name}"
    return callback


@dataclass
class PublisherStats:
    """Counters since start(). ``published`` counts messages paho accepted (sent or queued in
    memory), ``dropped`` those it refused (queue full, other errors) or that came after close()."""

    published: int = 0
    dropped: int = 0
    connects: int = 0
    disconnects: int = 0


class MqttPublisher:
    """Publishes one device's results, counts and status; see docs/mqtt.md for the topics.

    Thread-safe: the pipeline threads call ``publish_*``; paho's network thread runs the
    callbacks. The constructor only assigns; ``start()`` and ``close()`` do the I/O.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        agent_version: str,
        model: dict[str, Any] | None,
        sources: list[str],
    ) -> None:
        if not cfg.host:
            raise ValueError("mqtt.host must be a host name or address, but got an empty string")
        topics.check_source_ids(sources)
        self.cfg = cfg
        self.device_id = device_id
        self.agent_version = agent_version
        self.model = model
        self.sources = list(sources)
        self.topics = Topics(cfg.topic_prefix, device_id)
        self.client_id = cfg.client_id or f"{CLIENT_ID_PREFIX}{device_id}"
        self.stats = PublisherStats()
        self._where = f"{cfg.host}:{cfg.port}"
        self._lock = threading.Lock()  # counters and flags; never held while calling paho
        # Serialises status publishes (reconnect, set_status, close) so a retained "online" can
        # never land after "offline". Taken before _lock, never inside it.
        self._status_lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._state = "online"  # what (re)connects announce; set_status changes it
        self._link_up = False  # a CONNACK accepted and no disconnect since
        self._outage_since: float | None = None  # monotonic time the current outage began
        self._drop_warned = False
        self._closing = False
        self._closed = False
        self._last_counts: dict[str, dict[str, int]] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Configure the client and start connecting in paho's network thread.

        Returns at once; a broker that is down is retried in the background. Raises only for
        caller mistakes (started twice, unreadable TLS files).
        """
        if self._client is not None or self._closed:
            raise RuntimeError("MqttPublisher.start() may be called once, before close()")
        cfg = self.cfg
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=PROTOCOL,
            clean_session=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None:
            self._configure_tls(client, cfg.tls)
        self._set_will(client)
        # paho annotates the delays as int but only does float arithmetic with them
        # (client.py _reconnect_wait), and tests need sub-second delays.
        client.reconnect_delay_set(
            min_delay=cfg.reconnect_min_delay_s,  # type: ignore[arg-type]
            max_delay=cfg.reconnect_max_delay_s,  # type: ignore[arg-type]
        )
        # Counts QoS 1 messages waiting for the broker (in flight or queued); beyond it
        # publish() returns MQTT_ERR_QUEUE_SIZE. Must be set before connecting.
        client.max_queued_messages_set(cfg.max_queued_messages)
        client.on_pre_connect = guarded("pre_connect", self._on_pre_connect)
        client.on_connect = guarded("connect", self._on_connect)
        client.on_connect_fail = guarded("connect_fail", self._on_connect_fail)
        client.on_disconnect = guarded("disconnect", self._on_disconnect)
        client.on_log = guarded("log", self._on_log)
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client = client
        log.info("connecting to MQTT broker %s as %r", self._where, self.client_id)
        client.loop_start()  # thread "paho-mqtt-client-<client id>"

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Publish the retained "offline" status, wait up to ``timeout_s`` for the broker to
        acknowledge it, disconnect and stop the network thread. Safe to call more than once.

        A clean DISCONNECT makes the broker discard the last will, hence the explicit status.
        Messages still queued in memory when the broker is away are lost (the disk outbox will
        keep them).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        client = self._client
        if client is None:
            return
        with self._status_lock:
            with self._lock:
                self._closing = True
            info = None
            if client.is_connected():
                payload = self._status("offline")
                info = client.publish(self.topics.status(), payload, qos=STATUS_QOS, retain=True)
        if info is not None:
            try:
                info.wait_for_publish(timeout=timeout_s)
                acked = info.is_published()
            except (ValueError, RuntimeError) as exc:
                log.warning("could not publish the offline status: %s", exc)
                acked = False
            if not acked:
                log.warning(
                    "broker %s did not acknowledge the offline status within %.1f s",
                    self._where,
                    timeout_s,
                )
        client.disconnect()
        client.loop_stop()
        log.info("MQTT publisher closed (%s)", self.stats)

    @property
    def connected(self) -> bool:
        """True while a connection to the broker is up (CONNACK accepted)."""
        client = self._client
        return client is not None and client.is_connected()

    # -- publishing ----------------------------------------------------------------------------

    def publish_result(self, result: Result) -> None:
        """One frame's result to ``<src>/result``, QoS 1, not retained.

        Raises ValueError for a result that breaks the contract (unknown class id, NaN).
        """
        payload = payloads.result_payload(result, self.device_id)
        self._publish(self.topics.result(result.source_id), payload, RESULT_QOS, retain=False)

    def publish_counts(self, source_id: str, counts: dict[str, int], ts: float) -> None:
        """Retained ``<src>/count/<label>`` for each label whose count changed since the last
        call for this source. The first call (and the first after each reconnect, since the
        broker may have lost its retained messages) publishes every label given."""
        with self._lock:
            last = dict(self._last_counts.get(source_id, {}))
        for label, value in counts.items():
            n = int(value)
            if last.get(label) == n:
                continue
            topic = self.topics.count(source_id, label)
            if self._publish(topic, payloads.count_payload(n, ts), COUNT_QOS, retain=True):
                with self._lock:
                    self._last_counts.setdefault(source_id, {})[label] = n

    def set_status(self, state: str) -> None:
        """Publish the retained status (online, offline or degraded); reconnects repeat it."""
        payload = self._status_dict(state)  # raises ValueError for an unknown state
        with self._status_lock:
            with self._lock:
                self._state = state
            if self._client is not None:
                self._publish(self.topics.status(), payload, STATUS_QOS, retain=True)

    # -- internals -----------------------------------------------------------------------------

    def _publish(self, topic: str, payload: dict[str, Any], qos: int, retain: bool) -> bool:
        """Hand one message to paho; True if it was sent or queued, False if dropped.

        Seam for the disk outbox (publish/outbox.py): a message refused here, or every result
        while ``connected`` is False, will go to the outbox instead of being dropped.
        """
        data = payloads.encode(payload)
        client = self._client
        if client is None:
            raise RuntimeError("MqttPublisher.start() must be called before publishing")
        if self._closed:
            with self._lock:
                self.stats.dropped += 1
            log.debug("dropped %s: publisher closed", topic)
            return False
        rc = client.publish(topic, data, qos=qos, retain=retain).rc
        # For QoS > 0 paho keeps the message in its out queue whatever the socket did
        # (NO_CONN included) and resends it after reconnecting; only QUEUE_SIZE means it was
        # not kept (client.py publish()). QoS 0 messages are kept only on SUCCESS.
        if qos > 0:
            accepted = rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
        else:
            accepted = rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        with self._lock:
            if accepted:
                self.stats.published += 1
                return True
            self.stats.dropped += 1
            first = not self._drop_warned
            self._drop_warned = True
        if first:
            log.warning(
                "dropping MQTT messages (first: %s): %s; limit mqtt.max_queued_messages=%d",
                topic,
                describe_code(rc),
                self.cfg.max_queued_messages,
            )
        return False

    def _status_dict(self, state: str) -> dict[str, Any]:
        return payloads.status_payload(
            state, time.time(), self.agent_version, self.model, self.sources
        )

    def _status(self, state: str) -> bytes:
        return payloads.encode(self._status_dict(state))

    def _set_will(self, client: mqtt.Client) -> None:
        client.will_set(self.topics.status(), self._status("offline"), qos=STATUS_QOS, retain=True)

    def _configure_tls(self, client: mqtt.Client, tls: TlsConfig) -> None:
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
        except (OSError, ssl.SSLError) as exc:  # a missing or malformed file
            raise ValueError(f"mqtt.tls: cannot load the certificate files: {exc}") from exc
        client.tls_insecure_set(tls.insecure)
        if self.cfg.port == PLAIN_MQTT_PORT:
            log.warning(
                "mqtt.tls is set but mqtt.port is %d, the plain MQTT port; TLS is usually 8883",
                PLAIN_MQTT_PORT,
            )

    def _note_outage(self, why: str) -> None:
        """Log the start of an outage once; later failed attempts stay quiet."""
        with self._lock:
            if self._closing:
                return
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
        if first:
            log.warning("broker %s unreachable (%s), will keep retrying", self._where, why)

    # -- paho callbacks (network thread; every one is wrapped by guarded()) --------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        # The will goes out in CONNECT; refresh it so its ts is this connection's time.
        self._set_will(client)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self._note_outage(f"connection refused: {describe_code(reason_code)}")
            return
        with self._lock:
            self._link_up = True
            self.stats.connects += 1
            outage_since, self._outage_since = self._outage_since, None
            self._drop_warned = False
            # Retained counts may be gone (a broker restarted without persistence): republish.
            self._last_counts.clear()
            first = self.stats.connects == 1
        verb = "connected" if first else "reconnected"
        if outage_since is not None:
            down_s = time.monotonic() - outage_since
            log.info("%s to broker %s after %.1f s unreachable", verb, self._where, down_s)
        else:
            log.info("%s to broker %s", verb, self._where)
        with self._status_lock:
            with self._lock:
                state, closing = self._state, self._closing
            if not closing:
                self._publish(self.topics.status(), self._status_dict(state), STATUS_QOS, True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._note_outage("cannot connect")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        with self._lock:
            was_up, self._link_up = self._link_up, False
            if was_up:
                self.stats.disconnects += 1
            closing = self._closing
        if closing:
            log.info("disconnected from broker %s", self._where)
        elif was_up:
            self._note_outage(f"connection lost: {describe_code(reason_code)}")

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho logs "not connected" at ERROR on every retry; keep its chatter at DEBUG.
        log.debug("paho: %s", buf)
