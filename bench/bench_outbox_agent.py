"""The whole agent with and without the disk outbox: does writing every result to disk first
slow the pipeline?

    PYTHONPATH=. python bench/bench_outbox_agent.py [--rounds 6] [--loops 3]

Starts a mosquitto on a free loopback port. Each round runs the demo bundle on the demo clip
(--loops times over, as fast as the machine goes, no fps limit) through the whole agent twice,
in alternating order: once publishing as ``edge-agent run`` does (the disk outbox in a fresh
state folder, then the sender), once with the publisher's memory-only path (no outbox: data
straight to paho). It prints results/s of each (frames through the whole chain per wall
second, from the start of the agent to the end of the clip, the publisher's close included)
and the round's ratio; the verdict is the median ratio (a shared machine moves single runs
by 10 % or more, pairing neighbouring runs cancels most of that). The outbox's own rate
(target >= 2,000 results/s persisted) is bench/bench_outbox.py's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
from bench_agent import start_broker

from edge_agent import __version__
from edge_agent.bundle import load_bundle
from edge_agent.config import AgentConfig, ModelConfig, MqttConfig, SourceConfig
from edge_agent.config.mqtt_features import HomeAssistantConfig
from edge_agent.demo import BUNDLE, clip
from edge_agent.demo.analytics import demo_stages
from edge_agent.pipeline import Agent
from edge_agent.publish.publisher import MqttPublisher


def looped(video: Path, loops: int, out: Path) -> Path:
    """``video`` ``loops`` times over in one file (mp4v), so one run is long enough to time."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), clip.CLIP_FPS, (w, h))
    for _ in range(loops):
        for image in frames:
            writer.write(image)
    writer.release()
    return out


def config(video: Path, port: int, state: Path) -> AgentConfig:
    labels = load_bundle(BUNDLE).manifest.labels
    return AgentConfig(
        device_id="bench-outbox",
        model=ModelConfig(bundle=BUNDLE),
        sources=[SourceConfig(id="shelf", uri=str(video), stages=demo_stages(labels))],
        mqtt=MqttConfig(
            host="127.0.0.1", port=port, home_assistant=HomeAssistantConfig(discovery=False)
        ),
        state_dir=state,
    )


def run(cfg: AgentConfig, outbox: bool) -> tuple[float, int]:
    """(results/s, results) of one run through the clip."""
    started = time.perf_counter()
    if outbox:
        agent = Agent(cfg)  # as edge-agent run: the wiring opens the outbox in state_dir
    else:
        publisher = MqttPublisher(
            cfg.mqtt, cfg.device_id, __version__, None, [s.id for s in cfg.sources]
        )
        publisher.start()
        agent = Agent(cfg, sinks=[publisher], publish=False)
    with agent:
        agent.wait()
    seconds = time.perf_counter() - started
    done = agent.frames_done()
    return done / seconds, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--loops", type=int, default=3, help="times through the demo clip")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-outbox-agent-") as tmp:
        work = Path(tmp)
        one = work / "shelf.mp4"
        clip.write_clip(one)
        video = looped(one, args.loops, work / "shelf-looped.mp4")
        proc, port = start_broker(work)
        rows: list[tuple[float, float]] = []
        try:
            for r in range(args.rounds):
                state = work / f"state-{r}"
                cfg = config(video, port, state)
                order = (True, False) if r % 2 == 0 else (False, True)
                got = {o: run(cfg, o)[0] for o in order}
                rows.append((got[True], got[False]))
                print(f"round {r}: outbox {got[True]:.1f}/s, memory {got[False]:.1f}/s",
                      file=sys.stderr)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait()
    ratios = [a / b for a, b in rows]
    print("| round | with outbox, results/s | memory only, results/s | ratio |")
    print("|---|---|---|---|")
    for i, (a, b) in enumerate(rows):
        print(f"| {i} | {a:.1f} | {b:.1f} | {a / b:.3f} |")
    med = statistics.median(ratios)
    print(f"\nmedian ratio {med:.3f} ({(med - 1) * 100:+.1f} % with the outbox)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
