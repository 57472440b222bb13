"""The device's control messages: the retained status (and one lock its sends share), and the
retained summary of what the outbox dropped.

Split out of publisher.py, which keeps the data (results, counts, stage publications). The
status goes out on many paths from several threads (set_status, a source's state change,
thermal, a model swap, each heartbeat, each reconnect, the last will and close()); one lock
serialises them with the state they announce, so a reconnect cannot repeat a state that
set_status has just replaced (docs/mqtt.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from edge_agent.health.stats import StatsRegistry
from edge_agent.publish import payloads
from edge_agent.publish.client import Message, MqttClient
from edge_agent.publish.topics import Topics

if TYPE_CHECKING:
    from edge_agent.publish.outbox import Outbox

#: The publisher's logger: what it said before this module was split out of it.
log = logging.getLogger("edge_agent.publish.publisher")

#: QoS of the status topic, as docs/mqtt.md documents it.
STATUS_QOS = 1
#: The retained drop summary: QoS 1, a control message.
DROPPED_QOS = 1


class Status:
    """The retained status of one device: build it, send it, and say what it is now."""

    def __init__(
        self,
        client: MqttClient,
        topics: Topics,
        stats: StatsRegistry,
        run_id: str,
        agent_version: str,
        model: dict[str, Any] | None,
        sources: list[str],
        heartbeat_s: float,
    ) -> None:
        self.client = client
        self.topics = topics
        self.stats = stats
        self.run_id = run_id
        self.agent_version = agent_version
        self.model = model
        self.sources = sources
        self.heartbeat_s = heartbeat_s
        self.thermal: dict[str, Any] | None = None
        # Serialises status publishes (reconnect, set_status, set_model) and the state they
        # announce, so a reconnect cannot repeat a state that set_status has just replaced.
        self.lock = threading.Lock()
        self.state = "online"  # what (re)connects announce; set_status changes it
        self.closing = False

    def begin_close(self) -> bool:
        """Mark it closing; whether it already was (close() runs once)."""
        with self.lock:
            closing, self.closing = self.closing, True
        return closing

    def set_state(self, state: str) -> None:
        """Publish the retained status (online, offline or degraded); reconnects repeat it."""
        msg = self.message(state)  # raises ValueError for an unknown state
        with self.lock:
            self.state = state
            self.send(msg)

    def resend(self) -> None:
        """Publish the retained status again as it is now, unless closing."""
        with self.lock:
            if not self.closing:
                self.send(self.message(self.state))

    def set_thermal(self, thermal: dict[str, Any] | None) -> None:
        """Say in the status that the agent runs slower to cool down (None: full speed)."""
        with self.lock:
            self.thermal = thermal
            self.send(self.message(self.state))

    def set_model(self, model: dict[str, Any] | None) -> None:
        """Announce another model in the status, and republish it."""
        with self.lock:
            self.model = model
            self.send(self.message(self.state))

    def send(self, msg: Message) -> None:
        """The caller holds ``lock``. Before start() nothing is sent (the first connect
        announces the state); after close() the message is dropped."""
        if self.client.started:
            self.client.publish(msg.topic, msg.payload, msg.qos, msg.retain)

    def message(self, state: str) -> Message:
        """The retained status message saying ``state`` now."""
        payload = payloads.status_payload(
            state,
            time.time(),
            self.agent_version,
            self.model,
            self.sources,
            self.stats.totals(),
            self.thermal,
            run=self.run_id,
            heartbeat_s=self.heartbeat_s,
            source_state=self.source_states(),
            mqtt=self.link_figures() if self.client.takeover.count else None,
        )
        return Message(self.topics.status(), payloads.encode(payload), STATUS_QOS, retain=True)

    def source_states(self) -> dict[str, dict[str, Any]]:
        """``source_state`` of the status payload, from the stats registry. Read with
        ``get`` (no lock): a source's state change reaches ``set_status`` under SourceStates'
        lock, and this runs under ``lock``; taking that lock here could deadlock."""
        states = self.stats.source_states
        now = {sid: st.payload() for sid in self.sources if (st := states.get(sid)) is not None}
        return payloads.source_states_payload(now, self.stats.snapshot().get("source", {}))

    def link_figures(self) -> dict[str, Any]:
        """The MQTT link's own story: whether another client has taken the session."""
        watch = self.client.takeover
        return {"session_taken_over": watch.taken_over, "takeovers": watch.count}


class DropSummary:
    """The retained ``dropped`` summary: what the outbox dropped while the broker was away."""

    def __init__(
        self, client: MqttClient, topics: Topics, run_id: str, outbox: Outbox | None
    ) -> None:
        self.client = client
        self.topics = topics
        self.run_id = run_id
        self.outbox = outbox
        self._totals: dict[str, int] = {}

    def totals(self) -> dict[str, int]:
        """What the outbox dropped since this run started, by kind (summarised or not yet)."""
        pending = self.outbox.drops() if self.outbox is not None else {}
        kinds = set(self._totals) | set(pending)
        return {k: self._totals.get(k, 0) + pending.get(k, 0) for k in sorted(kinds)}

    def report(self) -> None:
        """The retained summary, when the outbox dropped anything since the last."""
        if self.outbox is None:
            return
        dropped = self.outbox.take_drops()
        if not any(dropped.values()):
            return
        for kind, n in dropped.items():
            self._totals[kind] = self._totals.get(kind, 0) + n
        body = payloads.dropped_payload(dropped, self._totals, time.time(), self.run_id)
        log.warning("the outbox dropped %s while the broker was away", dropped)
        self.client.publish(self.topics.dropped(), payloads.encode(body), DROPPED_QOS, True)
