"""Pieces shared by the outage and fault-injection tests: an ``edge-agent run`` subprocess on a
looping clip, a subscriber that stamps every message with the wall time it arrived, and
readers for what the agent published (result seqs per run, status messages) and for what its
disk outbox holds after a SIGKILL (read with sqlite3, read-only, so the evidence is unchanged).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, Recorder
from tools.toy_models import colour_blocks_bundle

AGENT = str(Path(sys.executable).parent / "edge-agent")
DEVICE = "field"
SOURCE = "belt"
PREFIX = "edgesight"
BASE = f"{PREFIX}/{DEVICE}"
RESULT_TOPIC = f"{BASE}/{SOURCE}/result"
STATUS_TOPIC = f"{BASE}/status"
DROPPED_TOPIC = f"{BASE}/dropped"
#: The agent's keepalive (the config's minimum): a silent link is noticed within ~2 x this.
KEEPALIVE_S = 5
#: Reconnect waits: short so a test sees many reconnects; the longest wait bounds each one, s.
RECONNECT_MIN_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 1.0
#: How long a SIGTERMed agent may take to publish "offline" and exit, s.
STOP_TIMEOUT_S = 20.0


def write_agent_config(
    tmp_path: Path,
    port: int,
    *,
    fps: float,
    outbox: dict[str, Any] | None = None,
    name: str = "agent.yaml",
) -> Path:
    """An agent config: the toy colour-blocks detector on a looping 20-frame clip paced at
    ``fps``, its state (and so its outbox) in ``tmp_path/state``, the broker at ``port``."""
    bundle, clip = tmp_path / "bundle", tmp_path / "clip.mp4"
    if not bundle.exists():
        colour_blocks_bundle(bundle)
    if not clip.exists():
        write_clip(clip)
    cfg = {
        "device_id": DEVICE,
        "state_dir": str(tmp_path / "state"),
        "model": {"bundle": str(bundle), "threads": 1},
        "sources": [{"id": SOURCE, "uri": str(clip), "on_eof": "loop", "fps_limit": fps}],
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "keepalive_s": KEEPALIVE_S,
            "reconnect_min_delay_s": RECONNECT_MIN_DELAY_S,
            "reconnect_max_delay_s": RECONNECT_MAX_DELAY_S,
            "outbox": outbox or {},
        },
    }
    path = tmp_path / name
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return path


def outbox_path(tmp_path: Path) -> Path:
    """Where the agent of ``write_agent_config`` keeps its outbox (the default place)."""
    return tmp_path / "state" / "outbox" / "outbox.db"


class Agent:
    """One ``edge-agent run`` subprocess; its stderr goes to a file (a pipe nobody reads
    would fill up and stall the agent in a long test)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [AGENT, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def kill(self) -> None:
        """SIGKILL: no offline status, no last commit of the outbox."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)
        self._log.close()

    def stop(self) -> int:
        """SIGTERM and wait for the clean exit; the return code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        finally:
            self._log.close()

    def ensure_dead(self) -> None:
        """For teardown: whatever state the test left the process in."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def stderr(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class Arrival:
    """One message as the subscriber got it, with the wall time (time.time()) it arrived."""

    topic: str
    payload: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class TimedRecorder(Recorder):
    """A Recorder that also keeps the arrival time of every message: reconnects and the
    backlog's drain are measured from the subscriber's side."""

    def __init__(self, broker: Broker, topic_filter: str, persistent_session: bool) -> None:
        self.arrivals: list[Arrival] = []  # before connecting: messages may come at once
        super().__init__(broker, topic_filter, persistent_session)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.arrivals.append(Arrival(msg.topic, bytes(msg.payload), time.time()))
        super()._on_message(client, userdata, msg)

    def timed(self, topic: str) -> list[Arrival]:
        with self._cond:
            return [a for a in self.arrivals if a.topic == topic]


def results_by_run(payloads: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
    """Result seqs per run id, in arrival order (duplicates kept)."""
    runs: dict[str, list[int]] = {}
    for p in payloads:
        runs.setdefault(p["run"], []).append(p["seq"])
    return runs


def gaps(seqs: Iterable[int], upto: int | None = None) -> list[int]:
    """The seqs missing from 0 to ``upto`` (default: the highest seen), sorted."""
    have = set(seqs)
    top = max(have, default=-1) if upto is None else upto
    return [s for s in range(top + 1) if s not in have]


def as_blocks(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as inclusive (first, last) runs, for readable assertion messages."""
    blocks: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if blocks and s == blocks[-1][1] + 1:
            blocks[-1] = (blocks[-1][0], s)
        else:
            blocks.append((s, s))
    return blocks


@dataclass(frozen=True)
class OutboxRow:
    kind: str
    topic: str
    payload: bytes
    created: float


def read_outbox(path: Path) -> list[OutboxRow]:
    """Every row of the agent's outbox, in send order, the committed WAL included. Opened
    read-only: the file stays exactly as the killed agent left it for the next start."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT kind, topic, payload, created FROM messages ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [OutboxRow(k, t, bytes(p), c) for k, t, p, c in rows]
