"""Fleet tools on an existing broker: push a bundle to a device or a group, read the fleet's
retained state, and run a staged rollout that stops and rolls back when too many devices fail.

Everything speaks the issue-13 protocol (docs/fleet.md): ``<p>/<dev>/cmd/update_model`` and
``cmd/rollback_model`` as MQTT 5 requests (response topic + correlation data), the retained
``<p>/<dev>/model`` and ``<p>/<dev>/status`` each device keeps, and the signed, retained
``<p>/fleet/<group>/desired`` (edge_agent.updates.desired) that late joiners reconcile to.
The MQTT connection (FleetClient, Connection, FleetError) is in trainer/fleet_client.py and
re-exported here.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import load_bundle
from edge_agent.updates.desired import sign_desired
from trainer.fleet_client import COMMAND_TTL_S as COMMAND_TTL_S
from trainer.fleet_client import CONNECT_TIMEOUT_S as CONNECT_TIMEOUT_S
from trainer.fleet_client import KEEPALIVE_S as KEEPALIVE_S
from trainer.fleet_client import SYNC_TIMEOUT_S as SYNC_TIMEOUT_S
from trainer.fleet_client import Connection as Connection
from trainer.fleet_client import Device as Device
from trainer.fleet_client import FleetClient as FleetClient
from trainer.fleet_client import FleetError as FleetError
from trainer.fleet_client import json_object

#: States after which a device does nothing more for an update (docs/fleet.md).
TERMINAL = ("active", "rejected", "rolled_back")
FAILED = ("rejected", "rolled_back")
#: How long one device may take from command to a final state before it counts as failed, s.
DEFAULT_DEVICE_TIMEOUT_S = 600.0
SHA_CHUNK_BYTES = 1 << 20


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
    data = json_object(raw) if raw else None
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
