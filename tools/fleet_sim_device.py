"""One simulated device's side of the issue-13 update protocol (docs/fleet.md), for
tools/fleet_sim.py.

It is apart from the fleet's event loop so that what a device says and when (status, the model
states of an update, replies, rollback, reconciling to the signed desired document) reads as
protocol, not as selector plumbing. Every method runs on the fleet's one loop thread; the
fleet's ``later`` timer heap stands in for the time real downloads and trials take.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.publish.paho_support import guarded
from edge_agent.updates.desired import DesiredError, verify_desired

if TYPE_CHECKING:
    from tools.fleet_sim import SimFleet

log = logging.getLogger("fleet_sim")

#: Wait before a dropped device connects again, s.
RECONNECT_DELAY_S = 1.0
#: Simulated time between the later update steps (verifying, staged, trial, active), s.
STEP_S = 0.05
FAIL_REASONS = {
    "rejected": "simulated: the bundle's signature matches none of the pinned keys",
    "rolled_back": "simulated: detection rate fell to zero against the old model in probation",
}


class SimDevice:
    """One device's protocol state; every method runs on the fleet's loop thread."""

    def __init__(self, fleet: SimFleet, index: int, fails: str | None) -> None:
        self.fleet, self.cfg = fleet, fleet.cfg
        self.id = f"sim-{index:04d}"
        self.fails = fails  # None, "rejected" or "rolled_back"
        self.base = f"{self.cfg.prefix}/{self.id}"
        self.current: dict[str, Any] = dict(self.cfg.model)
        self.previous: dict[str, Any] | None = None
        self.highest = int(self.current["version"])
        self.desired_seq = 0
        self.state = "active"
        self.busy = False
        self.connected = False
        self.started = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.id, protocol=mqtt.MQTTv5
        )
        offline = json.dumps({"state": "offline", "ts": None, "agent_version": "sim"})
        self.client.will_set(f"{self.base}/status", offline, qos=1, retain=True)
        self.client.on_connect = guarded("connect", self._on_connect)
        self.client.on_disconnect = guarded("disconnect", self._on_disconnect)
        self.client.on_message = guarded("message", self._on_message)
        fleet.attach(self.client)

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = True, **kw: Any) -> None:
        self.fleet.sent += 1
        self.client.publish(topic, json.dumps(payload), qos=1, retain=retain, **kw)

    def status(self) -> None:
        self.publish(
            f"{self.base}/status",
            {
                "state": "online",
                "ts": round(time.time(), 3),
                "agent_version": "sim",
                "model": self.current,
                "run": self.id,
            },
        )

    def model(self, state: str, about: dict[str, Any], reason: str | None, origin: str) -> None:
        self.state = state
        self.publish(
            f"{self.base}/model",
            {
                **about,
                "state": state,
                "ts": round(time.time(), 3),
                "reason": reason,
                "origin": origin,
                "group": self.cfg.group,
                "previous": self.previous,
            },
        )

    def _on_connect(self, client: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        if rc.is_failure:
            return
        self.connected = True
        self.fleet.connected.add(self.id)
        self.status()
        if not self.started:  # a start, not a reconnect: the broker kept the retained state
            self.started = True
            self.model("active", self.current, None, "start")
        client.subscribe(
            [(f"{self.base}/cmd/+", 1), (f"{self.cfg.prefix}/fleet/{self.cfg.group}/desired", 1)]
        )

    def _on_disconnect(self, client: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        self.connected = False
        self.fleet.connected.discard(self.id)
        if not self.fleet.stopping:
            self.fleet.later(RECONNECT_DELAY_S, self._reconnect)

    def _reconnect(self) -> None:
        try:
            self.client.reconnect()
        except OSError:
            self.fleet.later(RECONNECT_DELAY_S, self._reconnect)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.fleet.received += 1
        if msg.topic.endswith("/desired"):
            self._desired(bytes(msg.payload))
            return
        if msg.retain:  # a retained command is never acted on (docs/commands.md)
            return
        name = msg.topic.rsplit("/", 1)[1]
        try:
            request = json.loads(msg.payload or b"{}")
        except json.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._reply(msg, name, {}, {"ok": False, "error": "payload is not a JSON object"})
        elif name == "update_model":
            self._reply(msg, name, request, self._update(request, "command", False))
        elif name == "rollback_model":
            self._reply(msg, name, request, self._rollback())
        else:
            self._reply(msg, name, request, {"ok": False, "error": f"unknown command {name!r}"})

    def _reply(
        self, msg: mqtt.MQTTMessage, name: str, req: dict[str, Any], body: dict[str, Any]
    ) -> None:
        props = msg.properties
        topic = getattr(props, "ResponseTopic", None) or f"{self.base}/cmd/{name}/reply"
        out = Properties(PacketTypes.PUBLISH)
        if (corr := getattr(props, "CorrelationData", None)) is not None:
            out.CorrelationData = corr
        body = {"id": req.get("id"), "command": name, "ts": round(time.time(), 3), **body}
        if body["ok"]:
            body["result"] = {"state": body["state"]}
        self.publish(topic, body, retain=False, properties=out)

    def _update(self, req: dict[str, Any], origin: str, rollback: bool) -> dict[str, Any]:
        try:
            about = {
                "name": str(req.get("name") or self.current["name"]),
                "version": int(req["version"]),
                "sha256": str(req["sha256"]),
            }
        except (KeyError, TypeError, ValueError):
            return {"ok": False, "error": "update_model needs version and sha256"}
        if self.busy:
            return {"ok": False, "error": "an update is already in progress"}
        self.busy = True
        self.model("downloading", about, None, origin)
        delay = self.fleet.rng.uniform(*self.cfg.download_s)
        self.fleet.later(delay, lambda: self._verify(about, origin, rollback))
        return {"ok": True, "state": "downloading"}

    def _verify(self, about: dict[str, Any], origin: str, rollback: bool) -> None:
        self.model("verifying", about, None, origin)
        if about["version"] <= self.highest and not rollback:
            why = f"version {about['version']} is not higher than {self.highest} accepted before"
            return self._end("rejected", about, why, origin)
        if self.fails == "rejected":
            return self._end("rejected", about, FAIL_REASONS["rejected"], origin)
        self.fleet.later(STEP_S, lambda: self.model("staged", about, None, origin))
        self.fleet.later(2 * STEP_S, lambda: self.model("trial", about, None, origin))
        self.fleet.later(3 * STEP_S, lambda: self._finish(about, origin))

    def _finish(self, about: dict[str, Any], origin: str) -> None:
        if self.fails == "rolled_back":
            return self._end("rolled_back", self.current, FAIL_REASONS["rolled_back"], origin)
        self.previous, self.current = self.current, about
        self.highest = max(self.highest, int(about["version"]))
        self._end("active", about, None, origin)

    def _end(self, state: str, about: dict[str, Any], reason: str | None, origin: str) -> None:
        self.busy = False
        self.model(state, about, reason, origin)
        self.status()

    def _rollback(self) -> dict[str, Any]:
        if self.busy or self.previous is None:
            why = "an update is in progress" if self.busy else "no previous model"
            return {"ok": False, "error": f"cannot roll back: {why}"}
        self.current, self.previous = self.previous, self.current
        self.model("rolled_back", self.current, "rolled back by command", "command")
        self.status()
        return {"ok": True, "state": "rolled_back"}

    def _desired(self, raw: bytes) -> None:
        if not raw:
            return
        try:
            doc = verify_desired(raw, self.cfg.public_keys)
        except DesiredError as exc:
            log.debug("%s: ignoring desired document: %s", self.id, exc)
            return
        if doc.seq <= self.desired_seq or doc.group != self.cfg.group:
            return
        self.desired_seq = doc.seq
        if doc.sha256 != self.current["sha256"]:
            req = {"name": doc.name, "version": doc.version, "sha256": doc.sha256}
            self._update(req, f"fleet:{self.cfg.group}", doc.rollback)
