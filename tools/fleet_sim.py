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
one core's fraction and the broker gets the rest. This module is that loop and the command
line; one device's protocol handling is tools/fleet_sim_device.py.

    python -m tools.fleet_sim --broker 127.0.0.1:1883 -n 500 --group lab --public-key k.pub
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
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

from edge_agent.bundle.signing import load_public_key
from tools.fleet_sim_device import SimDevice as SimDevice

log = logging.getLogger("fleet_sim")

#: How often every client's keepalive bookkeeping runs (paho's loop_misc), s.
MISC_INTERVAL_S = 1.0
#: Longest select() wait, s: timers and stop() are noticed at least this often.
SELECT_MAX_S = 0.2
KEEPALIVE_S = 60


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
