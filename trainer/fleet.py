"""Fleet tools on an existing broker: push a bundle to a device or a group, read the fleet's
retained state, and run a staged rollout that stops and rolls back when too many devices fail.

Everything speaks the issue-13 protocol (docs/fleet.md): ``<p>/<dev>/cmd/update_model`` and
``cmd/rollback_model`` as MQTT 5 requests (response topic + correlation data), the retained
``<p>/<dev>/model`` and ``<p>/<dev>/status`` each device keeps, and the signed, retained
``<p>/fleet/<group>/desired`` (edge_agent.updates.desired) that late joiners reconcile to.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.bundle import load_bundle
from edge_agent.publish.command_auth import sign_command
from edge_agent.publish.paho_support import describe_code, guarded
from edge_agent.updates.desired import sign_desired
from trainer.errors import InputError

#: States after which a device does nothing more for an update (docs/fleet.md).
TERMINAL = ("active", "rejected", "rolled_back")
FAILED = ("rejected", "rolled_back")
#: Longest wait for CONNACK + SUBACK, s.
CONNECT_TIMEOUT_S = 10.0
#: Longest wait for the broker to deliver retained messages behind a sync marker, s.
SYNC_TIMEOUT_S = 10.0
#: MQTT keepalive of the tool's connection, s.
KEEPALIVE_S = 30
#: How long one device may take from command to a final state before it counts as failed, s.
DEFAULT_DEVICE_TIMEOUT_S = 600.0
SHA_CHUNK_BYTES = 1 << 20
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


@dataclass(frozen=True)
class BundleInfo:
    """What an update command and a desired document say about an archive."""

    archive: Path
    name: str
    version: int
    sha256: str
    size: int

    def command_args(self, url: str) -> dict[str, Any]:
        return {
            "url": url,
            "sha256": self.sha256,
            "size": self.size,
            "version": self.version,
            "name": self.name,
        }


def bundle_info(archive: Path) -> BundleInfo:
    """Load (and so verify) the archive's bundle; hash and size its bytes."""
    with tempfile.TemporaryDirectory(prefix="edgesight-push-") as cache:
        bundle = load_bundle(archive, cache_dir=cache)
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        while chunk := fh.read(SHA_CHUNK_BYTES):
            digest.update(chunk)
    return BundleInfo(
        archive,
        bundle.manifest.name,
        bundle.manifest.version,
        digest.hexdigest(),
        archive.stat().st_size,
    )


def bundle_url(url_base: str, archive: Path) -> str:
    return f"{url_base.rstrip('/')}/{archive.name}"


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
                self.replies[corr] = _json_object(payload) or {"ok": False, "error": "bad reply"}
            else:
                self._record(topic, payload)
            self._cond.notify_all()

    def _record(self, topic: str, payload: bytes) -> None:
        if fleet_topic := topic.startswith(f"{self.prefix}/fleet/"):
            self.retained[topic] = payload
        rest = topic.removeprefix(f"{self.prefix}/")
        device, _, kind = rest.partition("/")
        data = _json_object(payload)
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


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def reply_state(reply: dict[str, Any]) -> str | None:
    """The state an update reply names: top level (the issue's form) or in ``result``."""
    result = reply.get("result")
    state = reply.get("state") or (result.get("state") if isinstance(result, dict) else None)
    return state if isinstance(state, str) else None


@dataclass
class Outcome:
    device: str
    state: str  # a TERMINAL state, "timeout" or "refused"
    reason: str | None = None
    seconds: float = 0.0


def is_target(model: dict[str, Any] | None, info: BundleInfo) -> bool:
    """True when a model payload names this bundle (by archive sha256 or name and version)."""
    if not model:
        return False
    return model.get("sha256") == info.sha256 or (
        model.get("name") == info.name and model.get("version") == info.version
    )


def update_devices(
    fleet: FleetClient,
    devices: Sequence[str],
    info: BundleInfo,
    url: str,
    timeout_s: float = DEFAULT_DEVICE_TIMEOUT_S,
) -> list[Outcome]:
    """Send update_model to every device at once; wait until each reaches a final state for
    this bundle, is refused, or times out (both count as failures)."""
    start = time.monotonic()
    before = {d: e.model_updates for d, e in fleet.snapshot().items()}
    sent = {d: fleet.command(d, "update_model", info.command_args(url)) for d in devices}
    done: dict[str, Outcome] = {}

    def settle() -> bool:  # called under the client's lock
        for dev, corr in sent.items():
            if dev not in done and (outcome := _final(fleet, dev, corr, before, info)):
                outcome.seconds = time.monotonic() - start
                done[dev] = outcome
        return len(done) == len(sent)

    fleet.wait(settle, timeout_s)
    for dev in devices:
        done.setdefault(
            dev, Outcome(dev, "timeout", f"no final state within {timeout_s:g} s", timeout_s)
        )
    return [done[d] for d in devices]


def _final(
    fleet: FleetClient, dev: str, corr: bytes, before: dict[str, int], info: BundleInfo
) -> Outcome | None:
    """The device's final outcome for this update, if it has one yet."""
    reply = fleet.replies.get(corr)
    if reply is not None and reply.get("ok") is False:
        return Outcome(dev, "refused", str(reply.get("error")))
    entry = fleet.devices.get(dev)
    if entry is None or entry.model_updates <= before.get(dev, 0) or entry.model is None:
        return None
    state = entry.model.get("state")
    if state in FAILED or (state == "active" and is_target(entry.model, info)):
        return Outcome(dev, str(state), entry.model.get("reason"))
    return None


def next_seq(fleet: FleetClient, group: str) -> int:
    """One more than the seq of the group's retained desired document (1 if none)."""
    raw = fleet.read_retained(desired_topic(fleet.prefix, group))
    data = _json_object(raw) if raw else None
    seq = data.get("seq") if data else None
    return (seq if isinstance(seq, int) else 0) + 1


def desired_topic(prefix: str, group: str) -> str:
    return f"{prefix.rstrip('/')}/fleet/{group}/desired"


def publish_desired(
    fleet: FleetClient,
    key: Ed25519PrivateKey,
    group: str,
    info: BundleInfo,
    url: str,
    expires_in_s: float,
    *,
    rollback: bool = False,
) -> dict[str, Any]:
    """Sign and publish (retained) the group's next desired document; return it."""
    now = int(time.time())
    fields = {
        "group": group,
        "seq": next_seq(fleet, group),
        "name": info.name,
        "version": info.version,
        "url": url,
        "sha256": info.sha256,
        "size": info.size,
        "issued": now,
        "expires": now + int(expires_in_s),
        "rollback": rollback,
    }
    doc = sign_desired(key, fields)
    fleet.publish(desired_topic(fleet.prefix, group), doc, retain=True)
    return doc


@dataclass
class RolloutReport:
    group: str
    devices: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already on the bundle
    rolled_back: list[str] = field(default_factory=list)  # rolled back on abort (replied ok)
    aborted: bool = False
    desired_seq: int | None = None
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.state] = out.get(o.state, 0) + 1
        return out

    def failures(self) -> int:
        return sum(o.state != "active" for o in self.outcomes)


def rollback_devices(fleet: FleetClient, devices: Sequence[str], timeout_s: float) -> list[str]:
    """Send cmd/rollback_model to each; return those that answered ok within ``timeout_s``."""
    sent = {d: fleet.command(d, "rollback_model") for d in devices}
    fleet.wait(lambda: all(c in fleet.replies for c in sent.values()), timeout_s)
    return [d for d, c in sent.items() if (fleet.reply(c) or {}).get("ok") is True]


def group_devices(fleet: FleetClient, group: str) -> list[str]:
    """Devices whose retained model payload says they are in ``group``."""
    return sorted(
        d for d, e in fleet.snapshot().items() if e.model and e.model.get("group") == group
    )


def batches(devices: Sequence[str], canary: int, batch: int) -> list[list[str]]:
    """The canary first, then batches of ``batch``."""
    rest = list(devices[canary:])
    return [list(devices[:canary])] + [rest[i : i + batch] for i in range(0, len(rest), batch)]


def rollout(
    fleet: FleetClient,
    key: Ed25519PrivateKey,
    group: str,
    info: BundleInfo,
    url: str,
    *,
    canary: int,
    batch: int,
    max_failures_pct: float,
    expires_in_s: float,
    device_timeout_s: float = DEFAULT_DEVICE_TIMEOUT_S,
    progress: Callable[[str], None] = lambda line: None,
) -> RolloutReport:
    """Canary, then batches; abort (roll back the ones that went active, publish nothing) as
    soon as failures/tried exceeds ``max_failures_pct``; else publish the desired document."""
    start = time.monotonic()
    devices = group_devices(fleet, group)
    if not devices:
        raise FleetError(f"no device's retained model names group {group!r}")
    report = RolloutReport(group, devices)
    models = fleet.snapshot()
    report.skipped = [
        d
        for d in devices
        if is_target(models[d].model, info) and (models[d].model or {}).get("state") == "active"
    ]
    todo = [d for d in devices if d not in report.skipped]
    for number, chunk in enumerate(batches(todo, canary, batch)):
        if not chunk:
            continue
        what = "canary" if number == 0 else f"batch {number}"
        progress(f"{what}: updating {len(chunk)} devices")
        report.outcomes += update_devices(fleet, chunk, info, url, device_timeout_s)
        failed, tried = report.failures(), len(report.outcomes)
        progress(f"{what}: {failed} of {tried} tried failed so far ({report.counts()})")
        if failed * 100 > max_failures_pct * tried:
            report.aborted = True
            went_active = [o.device for o in report.outcomes if o.state == "active"]
            report.rolled_back = rollback_devices(fleet, went_active, device_timeout_s)
            progress(
                f"abort: {100 * failed / tried:.0f} % failed > {max_failures_pct:g} %; "
                f"rolling back {len(report.rolled_back)} devices"
            )
            break
    if not report.aborted:
        doc = publish_desired(fleet, key, group, info, url, expires_in_s)
        report.desired_seq = int(doc["seq"])
    report.seconds = time.monotonic() - start
    return report
