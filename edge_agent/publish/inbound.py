"""What the device receives over MQTT: commands on ``<prefix>/<device>/cmd/<name>`` and Home
Assistant's birth message on ``<discovery prefix>/status``.

paho's network thread only queues what arrives; one worker thread answers the commands in
order (``CommandRouter``, commands.py) and publishes the replies, so a slow command (a config
reload, a snapshot that waits for the next frame) never holds up keep-alives and
acknowledgements. The queue is bounded: a flood of commands beyond it is dropped and counted,
never a crash or a memory leak.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge_agent.publish.commands import CommandRouter, Incoming

log = logging.getLogger(__name__)

#: Commands waiting for the worker, at most; more are dropped (and counted).
QUEUE_LIMIT = 64
#: What Home Assistant publishes on its status topic when it (re)starts.
HA_ONLINE = b"online"


class Inbound:
    """Routes received messages: commands to a worker thread, HA's birth to ``on_ha_online``."""

    def __init__(
        self,
        command_prefix: str,
        router: CommandRouter | None,
        reply: Callable[[str, bytes, bytes | None], object],
        ha_status_topic: str | None = None,
        on_ha_online: Callable[[], None] | None = None,
    ) -> None:
        self.command_prefix = command_prefix.rstrip("/") + "/"
        self.router = router
        self._reply = reply
        self.ha_status_topic = ha_status_topic
        self._on_ha_online = on_ha_online
        self._queue: queue.Queue[Incoming | None] = queue.Queue(QUEUE_LIMIT)
        #: Other topics listened to (the fleet's desired model): topic -> callback(payload),
        #: called on paho's thread, so it must not block.
        self.watched: dict[str, Callable[[bytes], None]] = {}
        self._thread: threading.Thread | None = None
        #: Commands dropped because the worker was QUEUE_LIMIT behind.
        self.dropped = 0

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = []
        if self.router is not None:
            subs.append((f"{self.command_prefix}+", 1))
        if self.ha_status_topic is not None:
            subs.append((self.ha_status_topic, 1))
        subs += [(topic, 1) for topic in self.watched]
        return subs

    def start(self) -> None:
        if self.router is not None:
            self._thread = threading.Thread(target=self._work, name="mqtt-commands", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        """paho's network thread: never blocks, never raises (the caller guards it too)."""
        if msg.topic == self.ha_status_topic:
            if bytes(msg.payload).strip().lower() == HA_ONLINE and self._on_ha_online:
                self._on_ha_online()
            return
        watcher = self.watched.get(msg.topic)
        if watcher is not None:
            try:
                watcher(bytes(msg.payload))
            except Exception:
                log.exception("handling a message on %r failed", msg.topic[:128])
            return
        if self.router is None or not msg.topic.startswith(self.command_prefix):
            return
        name = msg.topic[len(self.command_prefix) :]
        if "/" in name:  # a reply topic (cmd/<name>/reply) or deeper: not a command
            return
        incoming = incoming_from_paho(msg, name)
        try:
            self._queue.put_nowait(incoming)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "dropped command %r: %d waiting already (%d dropped so far)",
                    name[:64],
                    QUEUE_LIMIT,
                    self.dropped,
                )

    def _work(self) -> None:
        assert self.router is not None
        while True:
            incoming = self._queue.get()
            if incoming is None:
                return
            reply = self.router.handle(incoming)  # never raises
            if reply is None:
                continue
            try:
                self._reply(reply.topic, reply.payload, reply.correlation)
            except Exception:
                log.exception("cannot publish the reply to %r", incoming.name[:64])


def incoming_from_paho(msg: mqtt.MQTTMessage, name: str | None = None) -> Incoming:
    """A received command as the router takes it, with its MQTT 5 properties (response
    topic, correlation data, expiry left); ``name`` defaults to the topic's last level."""
    props = msg.properties
    return Incoming(
        name=msg.topic.rsplit("/", 1)[-1] if name is None else name,
        payload=bytes(msg.payload),
        retained=bool(msg.retain),
        response_topic=getattr(props, "ResponseTopic", None),
        correlation=getattr(props, "CorrelationData", None),
        received=time.time(),
        expiry_s=getattr(props, "MessageExpiryInterval", None),
    )
