"""What one device publishes, and when: the retained status, each frame's result, and the
retained counts when they change (docs/mqtt.md). The connection itself is client.py.

``MqttPublisher`` is a sink of the pipeline (``emit(result, frame)``): every result goes out on
``<src>/result`` and its counts on ``<src>/count/<label>``. Its figures (published, dropped,
connects, disconnects, connected) are the stats registry's publisher metrics.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config import MqttConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.publish import payloads, topics
from edge_agent.publish.announce import Announcer
from edge_agent.publish.client import CLOSE_TIMEOUT_S, MqttClient
from edge_agent.publish.inbound import Inbound
from edge_agent.publish.sender import Sender
from edge_agent.publish.status import DROPPED_QOS as DROPPED_QOS
from edge_agent.publish.status import STATUS_QOS as STATUS_QOS
from edge_agent.publish.status import DropSummary, Status
from edge_agent.publish.ticker import Job, Ticker
from edge_agent.publish.topics import Topics
from edge_agent.types import Frame, Publication, Result

if TYPE_CHECKING:
    from edge_agent.publish.commands import CommandRouter
    from edge_agent.publish.discovery import DiscoveryInputs
    from edge_agent.publish.outbox import Outbox

log = logging.getLogger(__name__)

#: QoS per topic, as docs/mqtt.md documents them (the status's: status.py).
RESULT_QOS = 1
COUNT_QOS = 1
#: (retained, QoS) of each kind of stage publication (types.Publication), as docs/mqtt.md
#: documents them. A snapshot is QoS 0: a newer one replaces it, and it may be large.
PUBLICATION_FLAGS: dict[str, tuple[bool, int]] = {
    "zone": (True, 1),
    "line": (True, 1),
    "slot": (True, 1),
    "event": (False, 1),
    "snapshot": (True, 0),
}
#: Default client id is this prefix plus the device id.
CLIENT_ID_PREFIX = "edgesight-"
#: The first stats message comes this soon after start (then every stats_interval_s), s.
FIRST_STATS_S = 5.0
#: How long close() waits for the outbox's messages in flight to be acknowledged, s.
DRAIN_S = 2.0


def new_run_id() -> str:
    """A run id: new at every start, so consumers tell runs apart and de-duplicate by
    ``(run, source, seq)`` (seq starts at 0 again after a restart). 12 hex digits of a random
    UUID: a collision between two runs of one device is a one in 10^14 chance."""
    return uuid.uuid4().hex[:12]


class MqttPublisher:
    """Publishes one device's results, counts and status; see docs/mqtt.md for the topics.

    Thread-safe: the pipeline threads call ``emit`` and ``publish_*``; paho's network thread
    calls back on every (re)connect. The constructor only assigns; ``start()`` and ``close()``
    do the I/O. Counts go to ``stats.publisher()`` (a private registry when none is given).
    """

    name = "mqtt"
    needs_frame = False

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        agent_version: str,
        model: dict[str, Any] | None,
        sources: list[str],
        stats: StatsRegistry | None = None,
        publish_skipped: Collection[str] = (),
        outbox: Outbox | None = None,
        run_id: str | None = None,
        router: CommandRouter | None = None,
        discovery: DiscoveryInputs | None = None,
        state_dir: Path | None = None,
        stats_payload: Callable[[], dict[str, Any]] | None = None,
        stats_query: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        topics.check_source_ids(sources)
        self.device_id = device_id
        self.agent_version = agent_version
        self.sources = list(sources)
        #: Sources whose frames the motion gate skipped still get a result message.
        self.publish_skipped = frozenset(publish_skipped)
        self.topics = Topics(cfg.topic_prefix, device_id)
        self.stats = stats if stats is not None else StatsRegistry()
        self.metrics = self.stats.publisher()
        #: New at every start; in every payload (docs/mqtt.md).
        self.run_id = run_id or new_run_id()
        self.heartbeat_s = cfg.heartbeat_s
        #: Data (results, counts, stage publications) goes through the disk outbox when there
        #: is one; control (status, drop summary, replies) straight to paho, never dropped.
        self.outbox = outbox
        self.announcer = None
        if discovery is not None:
            if state_dir is None:
                raise ValueError("Home Assistant discovery needs a state_dir (what it announced)")
            self.announcer = Announcer(
                discovery, state_dir, lambda t, d, q, r: self.client.publish(t, d, q, r)
            )
        announcer = self.announcer
        self.stats_payload = stats_payload
        #: The stats as the get_stats command answers them (a reporter of its own).
        self.stats_query = stats_query
        self.stats_interval_s = cfg.stats_interval_s
        self.inbound = Inbound(
            f"{self.topics.base}/cmd/",
            router,
            lambda topic, data, corr: self.client.publish_reply(topic, data, corr),
            ha_status_topic=f"{cfg.home_assistant.prefix}/status" if announcer else None,
            on_ha_online=announcer.announce if announcer else None,
        )
        self.client = MqttClient(
            cfg,
            cfg.client_id or f"{CLIENT_ID_PREFIX}{device_id}",
            will=lambda: self.status.message("offline"),
            metrics=self.metrics,
            on_connected=self._on_connected,
            on_published=self._on_published,
            queue_limit=0 if outbox is not None else None,
            on_message=self.inbound.on_message,
            device_id=device_id,
        )
        self.client.subscriptions = self.inbound.subscriptions()
        #: The retained status; the client's last will is its "offline" (built at CONNECT).
        self.status = Status(
            self.client,
            self.topics,
            self.stats,
            self.run_id,
            agent_version,
            model,
            self.sources,
            self.heartbeat_s,
        )
        self.sender = Sender(outbox, self.client) if outbox is not None else None
        self.drops = DropSummary(self.client, self.topics, self.run_id, outbox)
        # The connect itself announces the status: the first beat waits a whole interval.
        self._ticker = Ticker(
            [
                Job("MQTT heartbeat", self.heartbeat_s, self.heartbeat_s, self._beat),
                Job(
                    "MQTT stats",
                    self.stats_interval_s,
                    min(self.stats_interval_s, FIRST_STATS_S),
                    self._publish_stats,
                ),
            ],
            "mqtt-heartbeat",
        )
        self._lock = threading.Lock()  # _last_counts; never held while publishing
        self._last_counts: dict[str, dict[str, int]] = {}
        self._result_topics: dict[str, str] = {}
        #: The last retained publication per topic (zone, line, slot, snapshot), sent again
        #: after a reconnect: the broker may have lost its retained messages. Its lock is
        #: held while one is updated and handed to paho, and through the replay, so a replay
        #: can never hand paho an older value after a newer one (the broker keeps the last).
        #: paho's publish only queues; it never waits for a lock its network thread holds
        #: while calling back, so holding this across it cannot deadlock.
        self._retained: dict[str, tuple[str, bytes, int]] = {}
        self._control: dict[str, bytes] = {}  # publish_control's, sent again on reconnect
        self._retain_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in paho's network thread; returns at once (see client.py).

        Raises only for caller mistakes (started twice, unreadable TLS files).
        """
        self.client.start()
        if self.sender is not None:
            self.sender.start()
        self.inbound.start()
        self._ticker.start()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Publish the retained "offline" status, wait up to ``timeout_s`` for the broker to
        acknowledge it, disconnect and stop the network thread. Safe to call more than once.

        A clean DISCONNECT makes the broker discard the last will, hence the explicit status.
        """
        if self.status.begin_close():
            return
        self._ticker.stop(timeout_s)
        self.inbound.stop()
        if self.sender is not None and self.outbox is not None:
            outbox = self.outbox
            # What is in flight gets a moment to be acknowledged (else it is sent again at the
            # next start); what never left stays in the outbox for then.
            if self.client.connected:
                self.sender.wait_drained(min(DRAIN_S, timeout_s), lambda: outbox.depth > 0)
            self.sender.stop()
            outbox.close()
        self.client.close(self.status.message("offline"), timeout_s, what="the offline status")
        if self.client.started:
            m = self.metrics
            log.info(
                "MQTT publisher closed (published %d, dropped %d, connects %d, disconnects %d)",
                m.published.value,
                m.dropped.value,
                m.connects.value,
                m.disconnects.value,
            )

    @property
    def model(self) -> dict[str, Any] | None:
        """The model the status announces (``Bundle.describe()``)."""
        return self.status.model

    @property
    def connected(self) -> bool:
        """True while a connection to the broker is up (CONNACK accepted)."""
        return self.client.connected

    # -- publishing ----------------------------------------------------------------------------

    def emit(self, result: Result, frame: Frame | None) -> None:
        """As a sink: the result, then its counts, then what its stages published. A frame the
        motion gate skipped has no result message unless its source asks for one (its counts
        and stage publications go out as usual, only when they change)."""
        if result.inferred or result.source_id in self.publish_skipped:
            self.publish_result(result)
        self.publish_counts(result.source_id, result.counts, result.ts)
        for publication in result.publications:
            self.publish(result.source_id, publication)

    def finish(self, result: Result) -> None:
        """As a sink, when a source ends: what its stages concluded (no result, no counts)."""
        for publication in result.publications:
            self.publish(result.source_id, publication)

    def publish(self, source_id: str, publication: Publication) -> None:
        """One stage publication on its topic (``Topics.publication``), retained and with the
        QoS of its kind (PUBLICATION_FLAGS). Raises ValueError for an unknown kind."""
        topic = self.topics.publication(source_id, publication.kind, publication.levels)
        retain, qos = PUBLICATION_FLAGS[publication.kind]
        body = publication.payload
        kind = publication.kind
        data = body if isinstance(body, bytes) else payloads.encode({**body, "run": self.run_id})
        if not retain:
            self._data(kind, topic, data, qos, retain=False)
            return
        with self._retain_lock:
            self._retained[topic] = (kind, data, qos)
            self._data(kind, topic, data, qos, retain=True)

    def publish_result(self, result: Result) -> None:
        """One frame's result to ``<src>/result``, QoS 1, not retained.

        Raises ValueError for a result that breaks the contract (unknown class id, NaN).
        """
        data = payloads.encode(payloads.result_payload(result, self.device_id, self.run_id))
        topic = self._result_topics.get(result.source_id)
        if topic is None:  # made once per source: topic_level walks every character
            topic = self._result_topics[result.source_id] = self.topics.result(result.source_id)
        self._data("result", topic, data, RESULT_QOS, retain=False)

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
            data = payloads.encode(payloads.count_payload(n, ts, self.run_id))
            if self._data("count", topic, data, COUNT_QOS, retain=True):
                with self._lock:
                    self._last_counts.setdefault(source_id, {})[label] = n

    def set_status(self, state: str) -> None:
        """Publish the retained status (online, offline or degraded); reconnects repeat it.
        Raises ValueError for an unknown state."""
        self.status.set_state(state)

    def refresh_status(self) -> None:
        """Publish the retained status again as it is now (a source's state changed)."""
        self.status.resend()

    def set_thermal(self, thermal: dict[str, Any] | None) -> None:
        """Say in the status that the agent runs slower to cool down (None: full speed)."""
        self.status.set_thermal(thermal)

    def set_model(self, model: dict[str, Any] | None) -> None:
        """Announce another model (``Bundle.describe()``) in the status, and republish it.

        The last will registered with the broker keeps the old model until the next reconnect
        (MQTT 3.1.1 cannot change a will during a connection).
        """
        self.status.set_model(model)

    def watch(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Listen to `topic` (retained messages included) from the next (re)subscribe on;
        `callback(payload)` runs on paho's thread and must not block."""
        self.inbound.watched[topic] = callback
        self.client.subscriptions = self.inbound.subscriptions()
        self.client.resubscribe()

    def publish_control(self, topic: str, payload: dict[str, Any]) -> None:
        """A retained control message (the model state): straight to paho, QoS 1, never
        dropped, and sent again after every reconnect (the broker may have lost it)."""
        data = payloads.encode(payload)
        with self._retain_lock:
            self._control[topic] = data
            self.client.publish(topic, data, 1, retain=True)

    # -- internals -----------------------------------------------------------------------------

    def _data(self, kind: str, topic: str, data: bytes, qos: int, retain: bool) -> bool:
        """A data message: into the outbox (the sender publishes it in order), or, without
        one, straight to paho's memory queue (False when it was full)."""
        if self.outbox is None or self.sender is None:
            return self.client.publish(topic, data, qos, retain)
        self.outbox.put(kind, topic, data, qos, retain)
        self.sender.wake()
        return True

    def _on_published(self) -> None:
        if self.sender is not None:
            self.sender.on_published()

    def _beat(self) -> None:
        """The retained status again with a fresh ``ts`` (a consumer tells a live "online"
        from one a dead broker kept), the drop summary if any, and a check that paho's network
        thread still runs."""
        if not self.client.check_alive() and self.sender is not None:
            self.sender.restart()
        if self.client.connected:
            self.status.resend()
            self.drops.report()

    def _publish_stats(self) -> None:
        """The stats message, retained, QoS 0: only while connected (a newer one follows)."""
        if self.stats_payload is None or not self.client.connected:
            return
        body = {**self.stats_payload(), "run": self.run_id}
        self.client.publish(self.topics.stats(), payloads.encode(body), 0, retain=True)

    def drop_totals(self) -> dict[str, int]:
        """What the outbox dropped since this run started, by kind (summarised or not yet)."""
        return self.drops.totals()

    def source_states(self) -> dict[str, dict[str, Any]]:
        """``source_state`` of the status payload (Status.source_states)."""
        return self.status.source_states()

    def link_figures(self) -> dict[str, Any]:
        """The MQTT link's own story: whether another client has taken the session."""
        return self.status.link_figures()

    def _on_connected(self) -> None:
        """paho's network thread, after every accepted CONNACK."""
        with self._lock:
            # Retained counts may be gone (a broker restarted without persistence): republish.
            self._last_counts.clear()
        self.status.resend()
        with self._retain_lock:
            # Through the outbox when there is one: after any backlog, so the newest value of
            # a topic is always the last the broker gets.
            for topic, (kind, data, qos) in self._retained.items():
                self._data(kind, topic, data, qos, retain=True)
            for topic, data in self._control.items():
                self.client.publish(topic, data, 1, retain=True)
        if self.sender is not None:
            self.sender.wake()
        self.drops.report()
        if self.announcer is not None:
            self.announcer.announce()
