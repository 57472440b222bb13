"""``edge-agent demo``: the whole agent path on a generated conveyor clip, offline.

The bundled model is ``colour_blocks`` (a hand-built sliding-window detector of red, green and
blue blocks, rebuilt by ``python -m tools.toy_models``) so the demo needs no download and no
training. It is a stand-in until a trained shelf detector is bundled.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from edge_agent.config import AgentConfig, ModelConfig, MqttConfig, SourceConfig
from edge_agent.pipeline import Agent
from edge_agent.types import Frame, Result

BUNDLE = Path(__file__).parent / "colour_blocks"
CLIP_NAME = "conveyor.mp4"
CLIP_SIZE = (640, 480)  # width, height; the model sees 160x160, so a block is 4x3 px per cell
CLIP_FPS = 15
CLIP_FRAMES = 150
BLOCK = (128, 96)  # one 32 px model window after the stretch to 160x160
SPEED_PX = 9  # per frame
LANES_Y = (80, 300)
# (first frame, lane, BGR colour) of each item put on the belt
ITEMS = [
    (0, 0, (0, 0, 230)),
    (10, 1, (230, 0, 0)),
    (35, 0, (0, 210, 0)),
    (55, 1, (0, 0, 230)),
    (70, 0, (230, 0, 0)),
    (95, 1, (0, 210, 0)),
    (105, 0, (0, 0, 230)),
]
TABLE_EVERY_FRAMES = CLIP_FPS  # one table row per second of video


def write_clip(path: Path) -> Path:
    """Blocks ride a grey belt from left to right; deterministic, so results are too."""
    w, h = CLIP_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), CLIP_FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
    rng = np.random.default_rng(7)
    belt = np.full((h, w, 3), 70, np.uint8)
    belt += rng.integers(0, 12, (h, w, 1), dtype=np.uint8)
    try:
        for i in range(CLIP_FRAMES):
            frame = belt.copy()
            for x in range(-(i * SPEED_PX) % 40, w, 40):  # belt slats move with the items
                cv2.line(frame, (x, 0), (x, h), (55, 55, 55), 2)
            for start, lane, colour in ITEMS:
                x = -BLOCK[0] + (i - start) * SPEED_PX
                if i >= start and x < w:
                    y = LANES_Y[lane]
                    cv2.rectangle(frame, (x, y), (x + BLOCK[0], y + BLOCK[1]), colour, -1)
            writer.write(frame)
    finally:
        writer.release()
    return path


class _Table:
    """Prints a live row of counts as results arrive."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.peak = dict.fromkeys(labels, 0)
        self.frames = 0
        print("  time  " + "".join(f"{lbl:>8}" for lbl in labels), flush=True)

    def __call__(self, result: Result, frame: Frame) -> None:
        self.frames += 1
        for label, n in result.counts.items():
            self.peak[label] = max(self.peak[label], n)
        if result.seq % TABLE_EVERY_FRAMES == 0:
            row = "".join(f"{result.counts[lbl]:>8}" for lbl in self.labels)
            print(f"{result.seq / CLIP_FPS:5.1f}s  {row}", flush=True)


def run_demo(out: Path, mqtt_host: str, mqtt_port: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    clip = out / CLIP_NAME
    if not clip.exists():
        write_clip(clip)
    cfg = AgentConfig(
        device_id="demo",
        model=ModelConfig(bundle=BUNDLE),
        sources=[SourceConfig(id="conveyor", uri=str(clip))],
        mqtt=MqttConfig(host=mqtt_host, port=mqtt_port, client_id="edgesight-demo"),
    )
    print(
        f"edgesight demo: {clip} -> colour-blocks model -> mqtt://{mqtt_host}:{mqtt_port}",
        flush=True,
    )
    table = _Table(["red", "green", "blue"])
    agent = Agent(cfg, on_result=table)
    try:
        agent.start()
        agent.wait()
    finally:
        agent.close()
    publisher = agent.publisher
    sent = publisher.stats.published if publisher else 0
    print(
        f"\nprocessed {table.frames} frames; most at once: "
        + ", ".join(f"{k} {v}" for k, v in table.peak.items())
    )
    if sent:
        print(f"published {sent} MQTT messages under edgesight/demo/ on {mqtt_host}:{mqtt_port}")
    else:
        print(
            f"no broker answered at {mqtt_host}:{mqtt_port}: results were computed but not "
            "delivered (start mosquitto, or pass --mqtt-host/--mqtt-port)",
            file=sys.stderr,
        )
    return 0 if table.frames == CLIP_FRAMES else 1
