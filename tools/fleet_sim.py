"""A simulated fleet: N lightweight devices speaking the issue-13 update protocol over MQTT 5.

Each device is a real paho client (``sim-0000``, ``sim-0001``, ...) that keeps a retained
``status`` (online; the last will says offline) and a retained ``model`` naming its group,
answers ``cmd/update_model`` (a random download delay, then verifying, staged, trial, active, or
rejected / rolled_back when it is one of the configured failing fraction) and
``cmd/rollback_model``, and reconciles to the group's signed desired document on connect
(checked with edge_agent.updates.desired.verify_desired against the given public keys).

Why one thread: 500 paho clients with ``loop_start()`` are 500 threads, which two cores spend
switching between. Here one thread drives every client through paho's external-loop API
(``loop_read``/``loop_write``/``loop_misc`` on an epoll selector, as paho's
examples/loop_select.py does) with a timer heap for the simulated work, so the fleet costs
one core's fraction and the broker gets the rest.

    python -m tools.fleet_sim --broker 127.0.0.1:1883 -n 500 --group lab --public-key k.pub
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import logging
import random
import selectors
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.bundle.signing import load_public_key
from edge_agent.publish.paho_support import guarded
from edge_agent.updates.desired import DesiredError, verify_desired

log = logging.getLogger("fleet_sim")

#: How often every client's keepalive bookkeeping runs (paho's loop_misc), s.
MISC_INTERVAL_S = 1.0
#: Longest select() wait, s: timers and stop() are noticed at least this often.
SELECT_MAX_S = 0.2
#: Wait before a dropped device connects again, s.
RECONNECT_DELAY_S = 1.0
KEEPALIVE_S = 60
#: Simulated time between the later update steps (verifying, staged, trial, active), s.
STEP_S = 0.05
FAIL_REASONS = {
    "rejected": "simulated: the bundle's signature matches none of the pinned keys",
    "rolled_back": "simulated: detection rate fell to zero against the old model in probation",
}


def model_id(name: str, version: int) -> dict[str, Any]:
    """A simulated model: its sha256 stands in for the archive's."""
    digest = hashlib.sha256(f"{name}@{version}".encode()).hexdigest()
    return {"name": name, "version": version, "sha256": digest}


@dataclass
class SimConfig:
    prefix: str = "edgesight"
    group: str = "sim"
    fail_fraction: float = 0.0
    download_s: tuple[float, float] = (0.1, 0.5)
    public_keys: Sequence[Ed25519PublicKey] = ()
    heartbeat_s: float = 0.0  # 0: status only on connect
    seed: int = 0
    model: dict[str, Any] = field(default_factory=lambda: model_id("sim-model", 1))


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


class SimFleet:
    """N simulated devices on one broker, driven by one named thread (start()/stop())."""

    def __init__(self, host: str, port: int, count: int, cfg: SimConfig) -> None:
        self.host, self.port, self.cfg = host, port, cfg
        self.rng = random.Random(cfg.seed)
        self.sent = self.received = 0
        self.stopping = False
        self.connected: set[str] = set()
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name="fleet-sim", daemon=True)
        self._stopped = threading.Event()
        failing = set(self.rng.sample(range(count), round(count * cfg.fail_fraction)))
        kinds = ("rejected", "rolled_back")
        self.devices = [
            SimDevice(self, i, kinds[i % 2] if i in failing else None) for i in range(count)
        ]

    def attach(self, client: mqtt.Client) -> None:
        """Let the selector drive this client: paho tells us when its socket opens, closes and
        has bytes to write."""
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote

    def _opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sel.register(sock, selectors.EVENT_READ, client)

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sel.unregister(sock)

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _wrote(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sel.modify(sock, selectors.EVENT_READ, client)

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._order), action))

    def start(self, timeout_s: float = 60.0) -> SimFleet:
        """Connect every device; return once all are connected (TimeoutError if not)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while len(self.connected) < len(self.devices):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.connected)} of {len(self.devices)} simulated "
                    f"devices connected within {timeout_s:g} s"
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.stopping = True
        self._stopped.wait(30)
        self._thread.join(30)

    def _run(self) -> None:
        for dev in self.devices:
            dev.client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        if self.cfg.heartbeat_s > 0:
            for dev in self.devices:
                self.later(self.rng.uniform(0, self.cfg.heartbeat_s), self._beat(dev))
        next_misc = time.monotonic() + MISC_INTERVAL_S
        while not self.stopping:
            self._turn()
            if (now := time.monotonic()) >= next_misc:
                next_misc = now + MISC_INTERVAL_S
                for dev in self.devices:
                    dev.client.loop_misc()
        for dev in self.devices:  # a clean goodbye: offline, then DISCONNECT (no will)
            if dev.connected:
                self.publish_offline(dev)
                dev.client.disconnect()
        for _ in range(20):
            self._turn(0.05)
        self._stopped.set()

    def publish_offline(self, dev: SimDevice) -> None:
        dev.publish(
            f"{dev.base}/status",
            {
                "state": "offline",
                "ts": round(time.time(), 3),
                "agent_version": "sim",
                "model": dev.current,
                "run": dev.id,
            },
        )

    def _beat(self, dev: SimDevice) -> Callable[[], None]:
        def beat() -> None:
            if dev.connected:
                dev.status()
            self.later(self.cfg.heartbeat_s, beat)

        return beat

    def _turn(self, max_wait_s: float = SELECT_MAX_S) -> None:
        wait = max_wait_s
        if self._timers:
            wait = max(0.0, min(wait, self._timers[0][0] - time.monotonic()))
        for key, mask in self._sel.select(wait):
            client: mqtt.Client = key.data
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.want_write():
                client.loop_write()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            try:
                action()
            except Exception:
                log.exception("simulated device step failed (ignored)")

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for dev in self.devices:
            out[dev.state] = out.get(dev.state, 0) + 1
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST[:PORT]")
    parser.add_argument("-n", "--devices", type=int, default=500)
    parser.add_argument("--group", default="sim")
    parser.add_argument("--prefix", default="edgesight")
    parser.add_argument("--fail-fraction", type=float, default=0.0)
    parser.add_argument("--public-key", action="append", default=[], help="desired doc keys")
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.broker.partition(":")
    cfg = SimConfig(
        prefix=args.prefix,
        group=args.group,
        fail_fraction=args.fail_fraction,
        public_keys=[load_public_key(k) for k in args.public_key],
        heartbeat_s=args.heartbeat_s,
        seed=args.seed,
    )
    fleet = SimFleet(host, int(port or 1883), args.devices, cfg)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    fleet.start()
    print(f"{len(fleet.devices)} simulated devices online in group {args.group}", flush=True)
    done.wait()
    fleet.stop()
    print(f"sent {fleet.sent}, received {fleet.received}; states {fleet.states()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
