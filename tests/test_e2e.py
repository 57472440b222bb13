"""`edge-agent run` as a user runs it: a subprocess, a generated clip, a real mosquitto."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.clips import BLUE_FROM, FRAMES, write_clip
from tools.toy_models import colour_blocks_bundle

AGENT = str(Path(sys.executable).parent / "edge-agent")
PREFIX = "edgesight/e2e"


def write_config(tmp_path: Path, port: int, **source: object) -> Path:
    colour_blocks_bundle(tmp_path / "bundle")
    clip = write_clip(tmp_path / "clip.mp4")
    src = {"id": "belt", "uri": str(clip), **source}
    cfg = {
        "device_id": "e2e",
        "model": {"bundle": "bundle", "threads": 1},
        "sources": [src],
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "keepalive_s": 5,
            "reconnect_min_delay_s": 0.2,
            "reconnect_max_delay_s": 1,
        },
    }
    path = tmp_path / "agent.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def start_agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AGENT, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def status_states(rec) -> list[str]:
    return [p["state"] for p in rec.json(f"{PREFIX}/status")]


def test_clip_results_counts_and_status(tmp_path, broker, mqtt_recorder):
    rec = mqtt_recorder(broker, "edgesight/#")
    agent = start_agent(write_config(tmp_path, broker.port))
    _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err

    assert rec.wait_for(lambda: len(rec.on(f"{PREFIX}/belt/result")) == FRAMES)
    results = rec.on(f"{PREFIX}/belt/result")
    assert all(m.qos == 1 and not m.retain for m in results)
    payloads = [json.loads(m.payload) for m in results]
    assert [p["seq"] for p in payloads] == list(range(FRAMES))
    assert len({p["id"] for p in payloads}) == FRAMES
    first, last = payloads[0], payloads[-1]
    assert first["schema"] == "edgesight.result/1" and first["model"] == "colour-blocks@1"
    assert first["task"] == "detect" and set(first["timing_ms"]) >= {"inference"}
    assert first["counts"] == {"red": 1, "green": 0, "blue": 0}
    assert last["counts"] == {"red": 1, "green": 0, "blue": 1}
    boxes = {p["tagName"]: p["boundingBox"] for p in last["predictions"]}
    assert boxes["red"] == pytest.approx(
        {"left": 0.2, "top": 0.2, "width": 0.2, "height": 0.2}, abs=1e-3
    )
    assert boxes["blue"] == pytest.approx(
        {"left": 0.6, "top": 0.6, "width": 0.2, "height": 0.2}, abs=1e-3
    )
    assert all(0.9 < p["probability"] <= 1.0 for p in last["predictions"])

    # Retained counts: published when they change, so blue went 0 then 1, green once.
    blue = rec.on(f"{PREFIX}/belt/count/blue")
    assert [json.loads(m.payload)["count"] for m in blue] == [0, 1]
    assert all(m.qos == 1 for m in blue)  # live delivery clears the retain flag (MQTT 3.1.1)
    assert json.loads(blue[1].payload)["ts"] == payloads[BLUE_FROM]["ts"]
    assert len(rec.on(f"{PREFIX}/belt/count/green")) == 1

    # Status: online while running, offline (retained) after a clean end.
    assert status_states(rec)[0] == "online" and status_states(rec)[-1] == "offline"
    # the offline status carries the stats registry's totals: every frame became a result
    final = rec.json(f"{PREFIX}/status")[-1]["totals"]
    assert final["results"] == FRAMES and final["frame_errors"] == 0
    late = mqtt_recorder(broker, f"{PREFIX}/#")
    assert late.wait_for(lambda: len(late.on(f"{PREFIX}/belt/count/red")) == 1)
    assert late.wait_for(lambda: len(late.on(f"{PREFIX}/status")) == 1)
    assert late.on(f"{PREFIX}/status")[0].retain
    assert late.json(f"{PREFIX}/status")[0]["state"] == "offline"
    assert late.wait_for(lambda: len(late.on(f"{PREFIX}/belt/count/blue")) == 1)
    (blue_retained,) = late.on(f"{PREFIX}/belt/count/blue")
    assert blue_retained.retain and blue_retained.qos == 1
    run = first["run"]  # one run id in every payload and in the status
    assert {p["run"] for p in payloads} == {run}
    assert json.loads(blue_retained.payload) == {
        "count": 1,
        "ts": payloads[BLUE_FROM]["ts"],
        "run": run,
    }
    assert {s["run"] for s in rec.json(f"{PREFIX}/status")} == {run}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_offline_status(tmp_path, broker, mqtt_recorder, sig):
    rec = mqtt_recorder(broker, f"{PREFIX}/#")
    agent = start_agent(write_config(tmp_path, broker.port, on_eof="loop", fps_limit=20))
    try:
        assert rec.wait_for(lambda: len(rec.on(f"{PREFIX}/belt/result")) > FRAMES + 2, 30)
        agent.send_signal(sig)
        _, err = agent.communicate(timeout=20)
    finally:
        agent.kill()
    assert agent.returncode == 0, err
    assert rec.wait_for(lambda: status_states(rec)[-1:] == ["offline"])
    # looping went past the end of the 20-frame clip with increasing seq
    seqs = [p["seq"] for p in rec.json(f"{PREFIX}/belt/result")]
    assert seqs == list(range(len(seqs))) and len(seqs) > FRAMES + 2


def test_sigkill_fires_the_last_will(tmp_path, broker, mqtt_recorder):
    rec = mqtt_recorder(broker, f"{PREFIX}/#")
    agent = start_agent(write_config(tmp_path, broker.port, on_eof="loop", fps_limit=20))
    try:
        assert rec.wait_for(lambda: "online" in status_states(rec), 30)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        agent.kill()
    assert rec.wait_for(lambda: status_states(rec)[-1:] == ["offline"], 15), (
        status_states(rec),
        broker.log()[-4000:],
    )
    offline = rec.on(f"{PREFIX}/status")[-1]
    assert offline.qos == 1


def test_broker_down_the_agent_still_processes(tmp_path, broker):
    broker.stop()
    agent = start_agent(write_config(tmp_path, broker.port))
    _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert f"finished after {FRAMES} frame(s)" in err
    # one warning for the outage, not one per retry
    assert err.count("unreachable") == 1, err


def test_missing_video_is_a_clear_error(tmp_path, broker):
    config = write_config(tmp_path, broker.port)
    (tmp_path / "clip.mp4").unlink()
    agent = start_agent(config)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 2
    assert "clip.mp4" in err and "belt" in err
