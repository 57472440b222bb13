"""The analytics chain as a user runs it: `edge-agent run` on a clip whose truth is known, the
toy detector, a real mosquitto. A block crosses a line one way and back, a shelf item is hidden
briefly (nothing fires) then gone for two seconds (out of stock, restocked), and a second run
with the same state folder carries the line's totals on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.helpers.clips import ANALYTICS_FRAMES, write_analytics_clip
from tools.toy_models import colour_blocks_bundle

AGENT = str(Path(sys.executable).parent / "edge-agent")
PREFIX = "edgesight/e2e"
BASE = f"{PREFIX}/belt"

STAGES: list[dict[str, Any]] = [
    {"type": "counts"},
    {"type": "track", "birth_hits": 2},
    {
        "type": "zones",
        "zones": [{"name": "right", "polygon": [[0.55, 0], [1, 0], [1, 1], [0.55, 1]],
                   "anchor": "center", "inertia": 2, "labels": ["blue"]}],
    },
    {
        "type": "lines",
        "lines": [{"name": "door", "start": [0.55, 1.0], "end": [0.55, 0.0], "in_side": "right",
                   "anchor": "center", "labels": ["blue"]}],
    },
    {
        "type": "slots",
        "slots": [{"name": "shelf", "polygon": [[0.18, 0.18], [0.42, 0.18], [0.42, 0.42],
                                                [0.18, 0.42]],
                   "label": "red", "capacity": 1, "debounce_s": 0.5}],
    },
    {"type": "events", "gap_s": 60},
    {"type": "snapshot"},
]  # fmt: skip


def write_config(tmp_path: Path, port: int) -> Path:
    if not (tmp_path / "bundle").exists():
        colour_blocks_bundle(tmp_path / "bundle")
        write_analytics_clip(tmp_path / "clip.mp4")
    cfg = {
        "device_id": "e2e",
        "state_dir": "state",
        "model": {"bundle": "bundle", "threads": 1},
        "sources": [{"id": "belt", "uri": "clip.mp4", "stages": STAGES}],
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 5,
                 "reconnect_min_delay_s": 0.2, "reconnect_max_delay_s": 1},
    }  # fmt: skip
    path = tmp_path / "agent.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def run_agent(config: Path) -> None:
    done = subprocess.run(
        [AGENT, "run", "--config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_lines_zones_slots_events_and_snapshots_over_mqtt(tmp_path, broker, mqtt_recorder):
    rec = mqtt_recorder(broker, "edgesight/#")
    config = write_config(tmp_path, broker.port)
    assert subprocess.run([AGENT, "check-config", str(config)], capture_output=True).returncode == 0
    run_agent(config)
    assert rec.wait_for(lambda: len(rec.on(f"{BASE}/result")) == ANALYTICS_FRAMES)
    assert rec.wait_for(lambda: any(e["type"] == "end" for e in rec.json(f"{BASE}/event")))

    # Results carry track ids; blue keeps one id all the way out and back.
    results = rec.json(f"{BASE}/result")
    blue_ids = {p["trackId"] for r in results for p in r["predictions"]
                if p["tagName"] == "blue" and "trackId" in p}  # fmt: skip
    assert len(blue_ids) == 1

    # The line: one in (to the right), one out (back), nothing else.
    line = rec.json(f"{BASE}/line/door")[-1]
    assert (line["in"], line["out"]) == (1, 1)
    assert line["labels"]["blue"] == {"in": 1, "out": 1}

    # The zone: blue entered once and left once.
    zone = rec.json(f"{BASE}/zone/right/blue")[-1]
    assert (zone["count"], zone["entries"], zone["exits"]) == (0, 1, 1)

    # The slot: the brief occlusion fired nothing; the absence fired out of stock, then
    # restocked, once each, in that order, with a snapshot each.
    events = rec.json(f"{BASE}/event")
    slot_events = [e for e in events if e.get("slot") == "shelf"]
    assert [e["type"] for e in slot_events] == ["out_of_stock", "restocked"]
    assert all(e["snapshot"] for e in slot_events)
    states = [s["state"] for s in rec.json(f"{BASE}/slot/shelf")]
    assert states[0] == "ok" and "out" in states and states[-1] == "ok"

    # The sequence (the whole clip: gap_s is 60) ended when the file did, per label.
    ends = {e["label"]: e for e in events if e["type"] == "end"}
    assert set(ends) == {"red", "blue"}
    assert ends["blue"]["max_count"] == 1 and ends["blue"]["unique_count"] == 1
    assert ends["red"]["max_count"] == 1 and ends["red"]["unique_count"] >= 1
    assert all(e["snapshot"] for e in ends.values())

    # Snapshots: files in the state folder, the latest retained on <src>/snapshot as a JPEG.
    folder = tmp_path / "state" / "sources" / "belt" / "snapshots"
    files = sorted(p.name for p in folder.glob("*.jpg"))
    assert {e["snapshot"] for e in slot_events + list(ends.values())} <= set(files)
    late = mqtt_recorder(broker, f"{BASE}/#")
    assert late.wait_for(lambda: late.on(f"{BASE}/snapshot") and late.on(f"{BASE}/line/door"))
    (snap,) = late.on(f"{BASE}/snapshot")
    assert snap.retain and snap.qos == 0
    image = cv2.imdecode(np.frombuffer(snap.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (480, 640)
    assert all(m.retain for m in late.on(f"{BASE}/line/door") + late.on(f"{BASE}/slot/shelf"))

    # A second run with the same state folder: the line's totals carry on.
    rec.clear()
    run_agent(config)
    assert rec.wait_for(lambda: len(rec.on(f"{BASE}/result")) == ANALYTICS_FRAMES)
    assert rec.wait_for(lambda: rec.json(f"{BASE}/line/door")[-1:] and
                        rec.json(f"{BASE}/line/door")[-1]["out"] == 2)  # fmt: skip
    line = rec.json(f"{BASE}/line/door")[-1]
    assert (line["in"], line["out"]) == (2, 2)
