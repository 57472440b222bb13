"""A staged rollout to a simulated fleet on one mosquitto, on this machine.

    PYTHONPATH=. .venv/bin/python bench/bench_fleet.py [--devices 500] [--steady-s 20]
        [--agent-config AGENT.yaml --port 18830]

For each scenario (2 % of devices failing on purpose: the rollout completes; 30 %: it aborts
at the canary and rolls the updated devices back) it starts a fresh mosquitto
(tests/helpers/mqtt.py), connects N simulated devices (tools/fleet_sim.py, one process, one
thread), then measures three phases with a wildcard subscriber on ``<prefix>/#`` and the broker's
CPU time from /proc/<pid>/stat:

- connect: every device online (status + model retained, two subscriptions);
- steady: ``--steady-s`` seconds of status heartbeats every ``--heartbeat-s`` (the only steady
  traffic a simulated device makes; docs/fleet.md adds the agent's stats and results);
- rollout: trainer.fleet.rollout, canary ``--canary`` then batches of ``--batch``, abort above
  ``--max-failures-pct``: completion time, messages per device, broker CPU seconds, aborted.

One real ``edge-agent run`` joins each run (``--no-agent`` leaves it out): the toy
colour-blocks detector, version 1, on a looping clip, in the bench's group, trusting the
bench's key; the rollout's bundle is its version 2, served from a loopback HTTP server, so the
real agent downloads, verifies, tries and swaps it like a device in the field while the
simulated devices only pretend to. Its final model state is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.bundle.signing import load_private_key, load_public_key
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker
from tests.helpers.update_server import UpdateServer
from tools.bad_models import build
from tools.fleet_sim import SimConfig, SimFleet
from trainer.fleet import Connection, FleetClient, bundle_info, bundle_url, rollout
from trainer.signing_cli import keygen, pack_bundle

SCENARIOS = (0.02, 0.30)  # failing fractions: one completes, one aborts
#: The real agent's device id in the run.
AGENT_ID = "real-agent"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Longest wait for the real agent to publish its model, s.
AGENT_READY_S = 60.0


def cpu_s(pid: int) -> float:
    """utime + stime of a process, s (proc(5): fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Phase:
    name: str
    seconds: float
    messages: int
    broker_cpu_s: float
    sim_cpu_s: float


class Counter:
    """A wildcard subscriber that only counts. QoS 0: at QoS 1 the broker queues at most
    max_queued_messages (1000) for a client and drops the rest of a burst, so it would
    undercount; tests/helpers/mqtt.py's Recorder subscribes at QoS 1 and keeps every message."""

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.count = 0
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=0)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError(f"the counter could not subscribe to {topic_filter} on {broker}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1  # one writer, the network thread; readers only read

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count >= n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Meter:
    """Messages the counter saw, broker and own CPU, between start() and stop()."""

    def __init__(self, counter: Counter, broker_pid: int) -> None:
        self.counter, self.pid = counter, broker_pid
        self.mark = (0.0, 0, 0.0, 0.0)

    def start(self) -> None:
        self.mark = (time.monotonic(), self.counter.count, cpu_s(self.pid), time.process_time())

    def stop(self, name: str) -> Phase:
        t, n, cpu, own = self.mark
        return Phase(
            name,
            time.monotonic() - t,
            self.counter.count - n,
            cpu_s(self.pid) - cpu,
            time.process_time() - own,
        )


def scenario(args: argparse.Namespace, work: Path, fail: float) -> None:
    broker = Broker(work, port=args.port)
    broker.start()
    pid = broker._proc.pid if broker._proc else 0  # the helper keeps its Popen private
    rec = Counter(broker, f"{args.prefix}/#")
    agent = None
    try:
        meter = Meter(rec, pid)
        cfg = SimConfig(
            prefix=args.prefix,
            group=args.group,
            fail_fraction=fail,
            download_s=args.download_s,
            heartbeat_s=args.heartbeat_s,
            seed=args.seed,
            public_keys=[load_public_key(args.key_dir / "edgesight.pub")],
        )
        meter.start()
        fleet = SimFleet(broker.host, broker.port, args.devices, cfg).start(timeout_s=120)
        # CONNACKs are in; the connect phase ends when their status and model reached us.
        rec.wait_for(2 * args.devices, 30)
        phases = [meter.stop("connect")]
        if args.agent:
            config = agent_config_file(args, work, broker)
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=(work / "agent.log").open("wb"),
            )
        meter.start()
        time.sleep(args.steady_s)
        phases.append(meter.stop("steady"))
        key = load_private_key(args.key_dir / "edgesight.key")
        conn = Connection(broker.host, broker.port)
        meter.start()
        with FleetClient(conn, args.prefix) as tool:
            if agent is not None and not tool.wait(
                lambda: len(tool.devices) > args.devices, AGENT_READY_S
            ):
                print("warning: the real agent published no model; rolling out without it")
            report = rollout(
                tool,
                key,
                args.group,
                args.info,
                bundle_url(args.url_base, args.archive),
                canary=args.canary,
                batch=args.batch,
                max_failures_pct=args.max_failures_pct,
                expires_in_s=3600,
                device_timeout_s=args.timeout_s,
            )
        phases.append(meter.stop("rollout"))
        if agent is not None:
            real = tool.snapshot().get(AGENT_ID)
            model = real.model if real else None
            seen = (f"{model['state']} {model['name']}@{model['version']}"
                    if model else "no model state seen")  # fmt: skip
            print(f"real agent {AGENT_ID}: {seen}")
        fleet.stop()
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        rec.close()
        broker.stop()
    verdict = (
        f"ABORTED, rolled back {len(report.rolled_back)}"
        if report.aborted
        else f"completed, desired seq {report.desired_seq}"
    )
    print(
        f"\n{fail:.0%} failing: {len(report.devices)} devices in the group "
        f"({report.counts()}); {verdict}"
    )
    print(
        f"{'phase':<8}{'seconds':>9}{'messages':>10}{'msg/device':>12}{'msg/dev/s':>11}"
        f"{'broker cpu s':>14}{'cpu ms/1k msg':>15}{'sim+tool cpu s':>16}"
    )
    for p in phases:
        per_dev = p.messages / max(1, args.devices)
        print(
            f"{p.name:<8}{p.seconds:>9.2f}{p.messages:>10}{per_dev:>12.2f}"
            f"{per_dev / max(p.seconds, 1e-9):>11.3f}{p.broker_cpu_s:>14.2f}"
            f"{1e6 * p.broker_cpu_s / max(1, p.messages):>15.1f}{p.sim_cpu_s:>16.2f}"
        )


def agent_config_file(args: argparse.Namespace, work: Path, broker: Broker) -> Path:
    """The real agent's config: bundle v1 (signed by the bench key), a looping clip, the group."""
    key = load_private_key(args.key_dir / "edgesight.key")
    v1 = build("good", work / "agent-v1", key, version=1)
    clip = write_clip(work / "clip.mp4")
    cfg = {
        "device_id": AGENT_ID,
        "state_dir": str(work / "agent-state"),
        "model": {"bundle": str(v1), "threads": 1,
                  "public_keys": [str(args.key_dir / "edgesight.pub")]},
        "sources": [{"id": "belt", "uri": str(clip), "on_eof": "loop", "fps_limit": 10}],
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": args.prefix},
        "updates": {"group": args.group, "allow_http": True, "allow_private_addresses": True,
                    "probation_s": 5},
        "log_level": "WARNING",
    }  # fmt: skip
    path = work / "agent.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--group", default="bench")
    parser.add_argument("--prefix", default="edgesight")
    parser.add_argument("--canary", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-failures-pct", type=float, default=10.0)
    parser.add_argument("--download-s", type=pair, default=(0.5, 3.0), help="MIN,MAX (0.5,3)")
    parser.add_argument("--heartbeat-s", type=float, default=30.0, help="agent default (30)")
    parser.add_argument("--steady-s", type=float, default=30.0)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", type=float, action="append", help="failing fraction(s)")
    parser.add_argument(
        "--no-agent", dest="agent", action="store_false", help="no real edge-agent in the run"
    )
    parser.add_argument("--port", type=int, help="broker port (default: a free one)")
    parser.add_argument("--key-dir", type=Path, help="signing key pair (default: a new one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        if args.key_dir is None or not (args.key_dir / "edgesight.key").exists():
            args.key_dir = args.key_dir or work / "keys"
            keygen(args.key_dir)
        # The real agent's next model: colour-blocks v2, signed, served on loopback at the
        # one path the test server serves (the simulated devices never fetch it).
        key = load_private_key(args.key_dir / "edgesight.key")
        folder = build("good", work / "bundle", key, version=2)
        args.archive = pack_bundle(folder, work / "bundle.tar.gz")
        args.info = bundle_info(args.archive)
        with UpdateServer(args.archive.read_bytes()) as server:
            args.url_base = server.url.rsplit("/", 1)[0]
            print(
                f"{args.devices} simulated devices, canary {args.canary}, batches of "
                f"{args.batch}, abort above {args.max_failures_pct:g} % failed, downloads "
                f"{args.download_s[0]:g}-{args.download_s[1]:g} s, heartbeat every "
                f"{args.heartbeat_s:g} s, {os.cpu_count()} cores"
            )
            for i, fail in enumerate(args.scenario or SCENARIOS):
                (work / f"run{i}").mkdir()
                scenario(args, work / f"run{i}", fail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
