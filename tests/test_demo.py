"""The README's demo command, end to end against a real broker."""

import json

from edge_agent.cli import main
from edge_agent.demo import CLIP_FRAMES


def test_demo_runs_the_whole_path(tmp_path, broker, mqtt_recorder, capsys):
    rec = mqtt_recorder(broker, "edgesight/demo/#")
    assert main(["demo", "--out", str(tmp_path), "--mqtt-host", broker.host,
                 "--mqtt-port", str(broker.port)]) == 0
    out = capsys.readouterr().out
    assert f"processed {CLIP_FRAMES} frames" in out and "published" in out
    assert rec.wait_for(lambda: len(rec.on("edgesight/demo/conveyor/result")) == CLIP_FRAMES)
    peak = {label: 0 for label in ("red", "green", "blue")}
    for payload in rec.json("edgesight/demo/conveyor/result"):
        for label, n in payload["counts"].items():
            peak[label] = max(peak[label], n)
    assert all(n >= 1 for n in peak.values()), peak  # every colour was seen on the belt
    assert json.loads(rec.on("edgesight/demo/status")[-1].payload)["state"] == "offline"
