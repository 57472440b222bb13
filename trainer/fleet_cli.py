"""``edge-trainer push | fleet status | fleet rollout``: ship a bundle to devices over MQTT.

``trainer/cli.py`` calls ``add_fleet_commands(sub)``. The work is in trainer/fleet.py; this
module parses flags, prints progress and summaries, and maps outcomes to exit codes: 0 done,
1 a device or the rollout failed, 2 bad input (a flag, a bundle, a key, an unreachable broker).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.signing import load_private_key
from edge_agent.cli.common import EXIT_OK
from edge_agent.config.mqtt import read_password_file
from trainer.cli_support import AGENT_INPUT_ERRORS, INPUT_ERRORS, error, positive
from trainer.errors import InputError
from trainer.fleet import (
    DEFAULT_DEVICE_TIMEOUT_S,
    BundleInfo,
    Connection,
    FleetClient,
    bundle_info,
    bundle_url,
    desired_topic,
    publish_desired,
    rollout,
    update_devices,
)
from trainer.signing_cli import pack_bundle

EXIT_FAILED = 1
#: --expires-in units, s.
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_EXPIRES = "7d"
#: Bad input: a flag, a bundle, a key, a broker that cannot be reached (FleetError).
FLEET_INPUT_ERRORS: tuple[type[Exception], ...] = (*INPUT_ERRORS, *AGENT_INPUT_ERRORS)


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h`` or ``7d`` as seconds."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not found or float(found[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 30m, 12h or 7d, got {text!r}"
        )
    return float(found[1]) * UNITS_S[found[2] or "s"]


def _broker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="MQTT broker")
    parser.add_argument("--prefix", default="edgesight", help="topic prefix (edgesight)")
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password-file", type=Path, help="file holding the broker password")
    parser.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    parser.add_argument("--ca-file", type=Path, help="CA certificate for TLS (implies --tls)")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="client certificate's key")
    parser.add_argument("--insecure", action="store_true", help="skip the host name check")


def _bundle_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", type=Path, help=".tar.gz, or a folder to pack")
    parser.add_argument(
        "--url-base",
        required=True,
        metavar="URL",
        help="where devices download it: URL/<archive name>",
    )
    parser.add_argument(
        "--pack-to",
        type=Path,
        metavar="DIR",
        help="where a BUNDLE folder is packed (its parent folder)",
    )
    parser.add_argument(
        "--key",
        type=Path,
        metavar="PRIVATE_KEY",
        help="signs the group's desired document (edge-trainer keygen)",
    )
    parser.add_argument(
        "--expires-in",
        type=duration,
        default=duration(DEFAULT_EXPIRES),
        help=f"desired document lifetime ({DEFAULT_EXPIRES})",
    )
    parser.add_argument(
        "--timeout",
        type=duration,
        default=DEFAULT_DEVICE_TIMEOUT_S,
        help="per device, command to final state (600s)",
    )
    parser.add_argument(
        "--sign-commands",
        action="store_true",
        help="sign commands with --key (for devices with mqtt.commands.public_keys)",
    )


def add_fleet_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``push`` and ``fleet {status,rollout}`` on the trainer's sub-commands."""
    push = subparsers.add_parser("push", help="send a bundle to one device or a group")
    _bundle_flags(push)
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="send cmd/update_model and wait for the outcome")
    target.add_argument("--group", help="publish the group's signed desired document")
    _broker_flags(push)
    push.set_defaults(func=run_push)

    fleet = subparsers.add_parser("fleet", help="fleet status and staged rollouts")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    status = fleet_sub.add_parser("status", help="every device's model state and status")
    status.add_argument("--group", help="only this group's devices")
    _broker_flags(status)
    status.set_defaults(func=run_status)

    roll = fleet_sub.add_parser("rollout", help="canary, then batches; abort on failures")
    _bundle_flags(roll)
    roll.add_argument("--group", required=True)
    roll.add_argument("--canary", type=positive, default=1, help="devices first (1)")
    roll.add_argument("--batch", type=positive, default=10, help="devices per batch (10)")
    roll.add_argument(
        "--max-failures-pct",
        type=float,
        default=10.0,
        metavar="P",
        help="abort when more than P %% of tried devices fail (10)",
    )
    _broker_flags(roll)
    roll.set_defaults(func=run_rollout)


def connection(args: argparse.Namespace) -> Connection:
    host, _, port = str(args.broker).partition(":")
    port = port or "1883"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            f"--broker: expected HOST[:PORT] with a port 1 to 65535, got {args.broker!r}"
        )
    try:
        password = read_password_file(args.password_file) if args.password_file else None
    except ValueError as exc:
        raise InputError(f"--password-file: {exc}") from None
    return Connection(
        host,
        int(port),
        args.username,
        password,
        args.ca_file,
        args.cert_file,
        args.key_file,
        args.insecure,
        args.tls,
    )


def _archive(args: argparse.Namespace) -> BundleInfo:
    path: Path = args.bundle
    if path.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            info = bundle_info(pack_bundle(path, Path(tmp) / "probe.tar.gz"))
        out = (args.pack_to or path.resolve().parent) / f"{info.name}-{info.version}.tar.gz"
        path = pack_bundle(path, out)
        print(f"packed {args.bundle} into {path}: serve it at {bundle_url(args.url_base, path)}")
    return bundle_info(path)


def _key(args: argparse.Namespace) -> Ed25519PrivateKey:
    if args.key is None:
        raise InputError(
            "--key: desired documents (and --sign-commands) must be signed; give the private key"
        )
    return load_private_key(args.key)


def run_push(args: argparse.Namespace) -> int:
    try:
        info, conn = _archive(args), connection(args)
        url = bundle_url(args.url_base, info.archive)
        key = _key(args) if args.group or args.sign_commands else None
        with FleetClient(conn, args.prefix) as fleet:
            fleet.signer = key if args.sign_commands else None
            if key is not None and args.group:
                doc = publish_desired(fleet, key, args.group, info, url, args.expires_in)
                print(
                    f"published {desired_topic(fleet.prefix, args.group)} seq {doc['seq']}: "
                    f"{info.name}@{info.version} {info.sha256[:12]} ({info.size} bytes)"
                )
                return EXIT_OK
            fleet.on_model = lambda dev, m: print(
                f"{dev}: {m.get('state')} {m.get('reason') or ''}".rstrip()
            )
            print(f"{args.device}: update_model {info.name}@{info.version} from {url}")
            [outcome] = update_devices(fleet, [args.device], info, url, args.timeout)
    except FLEET_INPUT_ERRORS as exc:
        return error(exc)
    print(
        f"{outcome.device}: {outcome.state} after {outcome.seconds:.1f} s"
        + (f" ({outcome.reason})" if outcome.reason else "")
    )
    return EXIT_OK if outcome.state == "active" else EXIT_FAILED


def run_status(args: argparse.Namespace) -> int:
    try:
        with FleetClient(connection(args), args.prefix) as fleet:
            devices = fleet.snapshot()
    except FLEET_INPUT_ERRORS as exc:
        return error(exc)
    rows = [("device", "group", "state", "model", "online", "reason")]
    for dev, entry in sorted(devices.items()):
        model, status = entry.model or {}, entry.status or {}
        if args.group and model.get("group") != args.group:
            continue
        name = f"{model.get('name')}@{model.get('version')}" if model else "-"
        rows.append(
            (
                dev,
                str(model.get("group") or "-"),
                str(model.get("state") or "-"),
                name,
                str(status.get("state") or "-"),
                str(model.get("reason") or ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)), row[5])
    counts: dict[str, int] = {}
    for row in rows[1:]:
        counts[row[2]] = counts.get(row[2], 0) + 1
    print(f"{len(rows) - 1} devices: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return EXIT_OK


def run_rollout(args: argparse.Namespace) -> int:
    start = time.monotonic()
    try:
        info, conn, key = _archive(args), connection(args), _key(args)
        url = bundle_url(args.url_base, info.archive)
        with FleetClient(conn, args.prefix) as fleet:
            fleet.signer = key if args.sign_commands else None
            report = rollout(
                fleet,
                key,
                args.group,
                info,
                url,
                canary=args.canary,
                batch=args.batch,
                max_failures_pct=args.max_failures_pct,
                expires_in_s=args.expires_in,
                device_timeout_s=args.timeout,
                progress=print,
            )
    except FLEET_INPUT_ERRORS as exc:
        return error(exc)
    for o in report.outcomes:
        if o.state != "active":
            print(f"  {o.device}: {o.state} ({o.reason or 'no reason given'})")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts().items())) or "none"
    went_active = report.counts().get("active", 0)
    verdict = (
        f"ABORTED, {len(report.rolled_back)} of {went_active} devices that went active rolled "
        "back; nothing published"
        if report.aborted
        else f"done, published desired seq {report.desired_seq}"
    )
    print(
        f"rollout {info.name}@{info.version} to group {args.group}: {len(report.devices)} "
        f"devices, {len(report.skipped)} already on it, tried {len(report.outcomes)} "
        f"({counts}) in {time.monotonic() - start:.1f} s: {verdict}"
    )
    return EXIT_FAILED if report.aborted else EXIT_OK
