"""The connection to the MQTT broker (paho-mqtt 2.x); what is published when is publisher.py.

The broker is an environment fault source like a camera: it may be down when the agent starts or
go away at any time. Nothing here raises for that. paho's network thread (``loop_start``)
reconnects, QoS 1 messages wait in paho's in-memory queue meanwhile, one warning in words is
logged per outage and the state shows in :attr:`MqttClient.connected` and the metrics.

Protocol and the persistent session (MQTT 5 by default; the broker keeps our subscriptions and
the commands sent to us while we are away): session.py builds the paho client for them.

Reconnecting: paho waits between attempts; we set each wait ourselves from the failure count
(doubling from ``reconnect_min_delay_s`` to ``reconnect_max_delay_s``, less a random part of up
to half, so a fleet that lost its broker does not come back in step). The default maximum of
2 s reconnects within 2 s of the broker coming back; an attempt is one TCP connect.

First connection: ``loop_start`` runs ``loop_forever(retry_first_connection=True)``
(paho/mqtt/client.py ``_thread_main``, paho-mqtt 2.2), so a broker that is down at start is
retried by paho itself; we add no thread of our own. ``check_alive`` (called by the owner's
timer) starts a new client should paho's thread ever die.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig
from edge_agent.health.stats import PublisherMetrics
from edge_agent.publish import session
from edge_agent.publish.outage import Outages
from edge_agent.publish.paho_support import describe_code, explain, guarded, wait_for_ack
from edge_agent.publish.session import PROTOCOLS as PROTOCOLS
from edge_agent.publish.session import Message as Message
from edge_agent.publish.takeover import TakeoverWatch

log = logging.getLogger(__name__)

#: How long close() waits by default for the broker to acknowledge the final message, s.
CLOSE_TIMEOUT_S = 5.0


class MqttClient:
    """One paho connection: connect and reconnect with backoff, the last will, TLS, credentials,
    ``publish(topic, bytes, qos, retain) -> bool``, and a final message on close().

    ``will`` makes the last will; it is called before every CONNECT so the will is current.
    ``on_connected`` runs in paho's network thread after each accepted CONNACK (the first one
    and every reconnect) so the owner can re-send what the broker may have lost. Counts go to
    ``metrics``. The constructor only assigns; ``start()`` and ``close()`` do the I/O.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        will: Callable[[], Message],
        metrics: PublisherMetrics,
        on_connected: Callable[[], None] | None = None,
        on_published: Callable[[], None] | None = None,
        queue_limit: int | None = None,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        device_id: str | None = None,
    ) -> None:
        if not cfg.host:
            raise ValueError("mqtt.host must be a host name or address, but got an empty string")
        self.cfg = cfg
        self.client_id = client_id
        self.metrics = metrics
        self._will = will
        self._on_connected = on_connected
        self._on_published = on_published
        self._on_message = on_message
        #: (topic filter, QoS) subscribed after every accepted CONNACK; the persistent session
        #: keeps them too, but a broker that lost its sessions would not.
        self.subscriptions: list[tuple[str, int]] = []
        #: paho's in-memory limit (0: none). With a disk outbox the data in memory is only the
        #: sender's window, and control messages must never be refused.
        self._queue_limit = cfg.max_queued_messages if queue_limit is None else queue_limit
        self._where = f"{cfg.host}:{cfg.port}"
        self._lock = threading.Lock()  # flags; never held while calling paho
        # Held while a message is handed to paho, and while close() marks the client closed and
        # hands over the final message: nothing published can land after that one.
        self._send_lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._link_up = False  # a CONNACK accepted and no disconnect since
        self._ever_connected = False
        self._drop_warned = False
        self._refusal_warned = False
        self._last_error: str | None = None  # paho's last ERR log line
        self._network_thread: threading.Thread | None = None  # the current paho thread
        self._outages = Outages(cfg, self._where, lambda: self._closed)
        #: Another client with our id (a second agent): said once, then long waits.
        self.takeover = TakeoverWatch(client_id, device_id, cfg.reconnect_max_delay_s)
        self._closed = False  # close() has begun: nothing more is published or logged as outage

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Configure paho and start connecting in its network thread.

        Returns at once; a broker that is down is retried in the background. Raises only for
        caller mistakes (started twice, unreadable TLS files).
        """
        if self._client is not None or self._closed:
            raise RuntimeError("start() may be called once, before close()")
        self._connect()
        log.info(
            "connecting to MQTT broker %s as %r (MQTT %s)",
            self._where,
            self.client_id,
            self.cfg.protocol,
        )

    def _connect(self) -> None:
        """A configured paho client in ``_client``, connecting in its own network thread
        (assigned before that thread starts: its callbacks look at ``started``)."""
        client = session.new_client(self.cfg, self.client_id, self._queue_limit)
        session.set_will(client, self._will())
        self._outages.set_next_wait(client)
        client.on_pre_connect = guarded("pre_connect", self._on_pre_connect)
        client.on_connect = guarded("connect", self._on_connect)
        client.on_connect_fail = guarded("connect_fail", self._on_connect_fail)
        client.on_disconnect = guarded("disconnect", self._on_disconnect)
        client.on_log = guarded("log", self._on_log)
        client.on_publish = guarded("publish", self._on_publish)
        client.on_message = guarded("message", self._on_message_received)
        session.connect_async(client, self.cfg)
        self._client = client
        client.loop_start()  # thread "paho-mqtt-client-<client id>"
        self._network_thread = getattr(client, "_thread", None)

    def check_alive(self) -> bool:
        """True if paho's network thread runs. If it died (a bug in paho or a callback we
        could not guard), log it and start a new client: the persistent session keeps our
        subscriptions. Called from the owner's timer, never from paho's thread."""
        client = self._client
        if client is None or self._closed:
            return True
        thread = self._network_thread  # paho clears its own reference when the thread ends
        if thread is None or thread.is_alive():
            return True
        log.error("the MQTT network thread has died; starting a new MQTT client")
        self.metrics.restarts.inc()
        with self._send_lock:
            if self._closed:
                return True
            self._connect()
        return False

    def close(
        self,
        final: Message | None = None,
        timeout_s: float = CLOSE_TIMEOUT_S,
        what: str = "the final message",
    ) -> None:
        """Publish ``final`` if connected, wait up to ``timeout_s`` for the broker to
        acknowledge it, disconnect and stop the network thread. Safe to call more than once.

        Whatever is published after close() began is dropped (and counted): ``final`` (named
        ``what`` in the log) is the last message. What is still queued in memory is lost.
        """
        with self._send_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            client = self._client
            if client is None:
                return
            info = None
            if final is not None and client.is_connected():
                info = client.publish(final.topic, final.payload, final.qos, final.retain)
        if info is not None:
            wait_for_ack(info, what, timeout_s, self._where)
        client.disconnect()
        client.loop_stop()
        self.metrics.connected.set(0)

    @property
    def started(self) -> bool:
        """True once start() has run (and still after close())."""
        return self._client is not None

    def resubscribe(self) -> None:
        """Subscribe to ``subscriptions`` now: one added while connected (the fleet's topic)."""
        client = self._client
        if client is not None and client.is_connected() and self.subscriptions:
            session.subscribe(client, self.cfg.protocol, self.subscriptions)

    @property
    def connected(self) -> bool:
        """True while a connection to the broker is up (CONNACK accepted)."""
        client = self._client
        return client is not None and client.is_connected()

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """Hand one message to paho; True if it was sent or queued, False if dropped.

        Seam for the disk outbox (publish/outbox.py): a message refused here, or every result
        while ``connected`` is False, will go to the outbox instead of being dropped.
        """
        if self._client is None:
            raise RuntimeError("start() must be called before publishing")
        with self._send_lock:
            if self._closed:
                self.metrics.dropped.inc()
                log.debug("dropped %s: client closed", topic)
                return False
            rc = self._client.publish(topic, payload, qos=qos, retain=retain).rc
        if session.kept(rc, qos):
            self.metrics.published.inc()
            return True
        self.metrics.dropped.inc()
        with self._lock:
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

    def publish_reply(self, topic: str, payload: bytes, correlation: bytes | None) -> bool:
        """A command reply: QoS 1, not retained, with the request's correlation data (MQTT 5).
        A control message: never limited by the queue (see ``queue_limit``)."""
        if self._client is None:
            raise RuntimeError("start() must be called before publishing")
        props = session.reply_properties(self.cfg.protocol, correlation)
        with self._send_lock:
            if self._closed:
                return False
            rc = self._client.publish(topic, payload, qos=1, retain=False, properties=props).rc
        return rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE

    def publish_tracked(
        self, topic: str, payload: bytes, qos: int, retain: bool
    ) -> mqtt.MQTTMessageInfo | None:
        """Hand one outbox message to paho; its delivery tells when the broker acknowledged
        it. None when the client is closed or paho did not keep it (the sender tries later).

        A QoS 1 message handed over while the link just dropped comes back with rc
        ``MQTT_ERR_NO_CONN`` but stays in paho's queue, sent after the reconnect; its
        ``is_published()`` would raise for that rc forever (it killed the sender thread once
        in CI), so the rc is set to success: the delivery then reports the real PUBACK."""
        if self._client is None:
            raise RuntimeError("start() must be called before publishing")
        with self._send_lock:
            if self._closed:
                return None
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS  # queued by paho: see above
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None  # queue full, or QoS 0 without a link (paho dropped it)
        self.metrics.published.inc()
        return info

    # -- paho callbacks (network thread; every one is wrapped by guarded()) --------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        # The will goes out in CONNECT; refresh it so its ts is this connection's time.
        session.set_will(client, self._will())

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self.takeover.attempt_failed()
            self._outages.failed(
                client, f"the broker refused the connection: {explain(reason_code)}"
            )
            return
        self.takeover.connected()
        with self._lock:
            self._link_up = True
            first, self._ever_connected = not self._ever_connected, True
            self._drop_warned = False
        down_s = self._outages.ended(client)
        self.metrics.connects.inc()
        self.metrics.connected.set(1)
        verb = "connected" if first else "reconnected"
        if down_s is not None:
            log.info("%s to broker %s after %.1f s unreachable", verb, self._where, down_s)
        else:
            log.info("%s to broker %s", verb, self._where)
        if self.subscriptions:
            session.subscribe(client, self.cfg.protocol, self.subscriptions)
        if self._on_connected is not None:
            self._on_connected()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the error (a refused TLS certificate,
        # a host name mismatch) says more than a probe of the port could.
        exc = sys.exc_info()[1]
        self.takeover.attempt_failed()
        self._outages.failed(client, f"cannot connect: {exc}" if exc is not None else None)

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
            closing = self._closed
        if was_up:
            self.metrics.disconnects.inc()
        self.metrics.connected.set(0)
        if closing:
            log.info("disconnected from broker %s", self._where)
        elif was_up:
            from_server = flags.is_disconnect_packet_from_server
            wait = self.takeover.dropped(reason_code.value, from_server)
            if wait is not None:  # said once by the watch; no "unreachable" every 2 s
                self._outages.hold(client, wait)
                return
            why: str
            if flags.is_disconnect_packet_from_server:
                why = f"the broker closed the session: {explain(reason_code)}"
            else:
                why = "the connection dropped (the network or the broker went away)"
            self._outages.failed(client, why)
        else:  # closed before a CONNACK: paho's last error line says why (a TLS alert)
            with self._lock:
                last = self._last_error
            self._outages.failed(
                client, f"closed before the broker answered: {last}" if last else None
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, props: Any
    ) -> None:
        if reason_code.is_failure:  # MQTT 5: the broker took it but will not deliver it
            self.metrics.refused.inc()
            with self._lock:
                first, self._refusal_warned = not self._refusal_warned, True
            if first:
                log.warning(
                    "the broker refused a message (and may refuse more): %s", explain(reason_code)
                )
        if self._on_published is not None:
            self._on_published()

    def _on_message_received(
        self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage
    ) -> None:
        if self._on_message is not None:
            self._on_message(msg)

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            with self._lock:
                self._last_error = buf
        # paho logs "not connected" at ERROR on every retry; keep its chatter at DEBUG.
        log.debug("paho: %s", buf)
