"""A real agent against a real mosquitto, for the live MQTT tests: its config (the toy
colour-blocks bundle, a looping generated clip, a state folder of its own), the agent in this
process or as ``edge-agent run``, and an MQTT 5 requester that matches each command's reply by
its correlation data."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import load_config
from edge_agent.pipeline import Agent
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, Recorder
from tools.toy_models import colour_blocks_bundle

PREFIX = "edgesight"
DEVICE = "live"
BASE = f"{PREFIX}/{DEVICE}"
SOURCE = "belt"
AGENT = str(Path(sys.executable).parent / "edge-agent")
#: Frames per second of the looping clip: enough results to watch, little CPU on 2 cores.
FPS = 20
#: Longest wait for a reply, a message or a state; generous, never asserted on.
WAIT_S = 15.0
#: Longest wait for ``edge-agent run`` to stop after SIGTERM.
STOP_TIMEOUT_S = 20.0
#: paho's Properties constructor, typed (paho leaves it unannotated).
_properties: Callable[[int], Properties] = Properties


@dataclass(frozen=True)
class Assets:
    """The toy bundle (labels red, green, blue) and the clip (tests/helpers/clips.py)."""

    bundle: Path
    clip: Path


def make_assets(folder: Path) -> Assets:
    folder.mkdir(parents=True, exist_ok=True)
    return Assets(colour_blocks_bundle(folder / "bundle"), write_clip(folder / "clip.mp4"))


def source(assets: Assets, source_id: str = SOURCE, **extra: Any) -> dict[str, Any]:
    """A source looping the clip at FPS frames per second."""
    return {"id": source_id, "uri": str(assets.clip), "on_eof": "loop", "fps_limit": FPS, **extra}


def agent_config(
    assets: Assets,
    broker: Broker,
    state_dir: Path,
    sources: list[dict[str, Any]] | None = None,
    **mqtt_extra: Any,
) -> dict[str, Any]:
    """An agent config as a dict: device DEVICE, prefix PREFIX, quick reconnects."""
    return {
        "device_id": DEVICE,
        "state_dir": str(state_dir),
        "model": {"bundle": str(assets.bundle), "threads": 1},
        "sources": sources if sources is not None else [source(assets)],
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "topic_prefix": PREFIX,
            "keepalive_s": 5,
            "reconnect_min_delay_s": 0.2,
            "reconnect_max_delay_s": 1,
            **mqtt_extra,
        },
    }


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return path


@contextmanager
def running_agent(config_file: Path) -> Iterator[Agent]:
    """The agent of ``config_file`` in this process (its log goes to caplog), closed after."""
    with Agent(load_config(config_file)) as agent:
        yield agent


@contextmanager
def agent_process(config_file: Path, log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``edge-agent run -c config_file``, its log in ``log_file``; SIGTERM at the end."""
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [AGENT, "run", "-c", str(config_file)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def statuses(rec: Recorder) -> list[dict[str, Any]]:
    return list(rec.json(f"{BASE}/status"))


def online_run(rec: Recorder, other_than: str | None = None) -> str:
    """Wait for an "online" status (of a run other than ``other_than``) and return its run."""

    def runs() -> list[str]:
        return [
            s["run"] for s in statuses(rec) if s["state"] == "online" and s["run"] != other_than
        ]

    assert rec.wait_for(lambda: bool(runs()), WAIT_S), statuses(rec)
    return runs()[-1]


def results(rec: Recorder, source_id: str = SOURCE) -> list[dict[str, Any]]:
    return rec.json(f"{BASE}/{source_id}/result")


def wait_results(rec: Recorder, n: int, source_id: str = SOURCE, **match: Any) -> None:
    """Wait until ``n`` results (whose fields equal ``match``) have arrived."""

    def count() -> int:
        return sum(all(r.get(k) == v for k, v in match.items()) for r in results(rec, source_id))

    assert rec.wait_for(lambda: count() >= n, WAIT_S), (count(), match)


class Requester:
    """A paho client that sends commands and collects replies: over MQTT 5 each request names
    a response topic of its own and correlation data, so every reply is matched to its
    request; over 3.1.1 (``protocol="3.1.1"``) replies are read from ``cmd/+/reply``."""

    def __init__(self, broker: Broker, protocol: str = "5") -> None:
        self.v5 = protocol == "5"
        self.inbox = f"test-replies/{uuid.uuid4().hex[:8]}"
        self._numbers = itertools.count(1)
        self._replies: dict[bytes, list[mqtt.MQTTMessage]] = {}
        self._by_topic: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"requester-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(WAIT_S):
            self.close()
            raise TimeoutError(f"requester could not subscribe on {broker}")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        client.subscribe(f"{self.inbox}/#" if self.v5 else f"{BASE}/cmd/+/reply", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            corr = getattr(msg.properties, "CorrelationData", None) if self.v5 else None
            if corr is not None:
                self._replies.setdefault(bytes(corr), []).append(msg)
            self._by_topic.append(msg)
            self._cond.notify_all()

    def send(
        self, name: str, payload: bytes | dict[str, Any] = b"", *, retain: bool = False
    ) -> bytes:
        """Publish one command (QoS 1) and return its correlation data (MQTT 5)."""
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        corr = str(next(self._numbers)).encode()
        props = None
        if self.v5:
            props = _properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"{self.inbox}/{corr.decode()}"
            props.CorrelationData = corr
        info = self.client.publish(
            f"{BASE}/cmd/{name}", payload, qos=1, retain=retain, properties=props
        )
        info.wait_for_publish(WAIT_S)
        return corr

    def replies(self, corr: bytes) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(m.payload) for m in self._replies.get(corr, [])]

    def reply_messages(self) -> list[mqtt.MQTTMessage]:
        """Every reply received, in order."""
        with self._cond:
            return list(self._by_topic)

    def wait(self, corr: bytes, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The one reply to the request ``corr``; AssertionError when none came."""
        with self._cond:
            self._cond.wait_for(lambda: corr in self._replies, timeout_s)
        got = self.replies(corr)
        assert got, f"no reply to request {corr!r} within {timeout_s:g} s"
        return got[0]

    def request(self, name: str, payload: bytes | dict[str, Any] = b"") -> dict[str, Any]:
        """Send a command and return its reply (MQTT 5)."""
        return self.wait(self.send(name, payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def requester(broker: Broker, protocol: str = "5") -> Iterator[Requester]:
    req = Requester(broker, protocol)
    try:
        yield req
    finally:
        req.close()
