"""The whole analytics chain's cost per frame on this machine, against the target.

    python bench/bench_analytics.py [--frames 2000] [--loads 10,50]

Runs counts -> track -> zones (3) -> lines (2) -> slots (6) -> events on generated frames with
exactly N boxes each (people walking across a 1280x720 picture and bouncing off its edges,
edge_agent/bench/tracking_scenes.busy_frames), the stages built from config exactly as the
agent builds them. Prints each stage's median and 90th percentile in ms per frame and the
chain's, after a warm-up, against the target: tracking + all counters <= 0.5 ms per frame at
50 detections. The snapshot stage is left out: it costs only when an event asks for a picture
(about 10 ms per JPEG, docs/shelves.md), not per frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from edge_agent.bench.tracking_scenes import LABELS, busy_frames
from edge_agent.config.sources import StageConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageChain, build_chain

TARGET_MS = 0.5
TARGET_LOAD = 50
WARMUP_FRAMES = 200


def _square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


STAGES: list[dict[str, Any]] = [
    {"type": "counts"},
    {"type": "track"},
    {
        "type": "zones",
        "zones": [
            {"name": "left", "polygon": _square(0.0, 0.0, 0.5), "loiter_s": 30},
            {"name": "right", "polygon": [[0.5, 0.2], [1.0, 0.1], [0.9, 0.9], [0.6, 0.8]]},
            {"name": "centre", "polygon": _square(0.3, 0.3, 0.4), "anchor": "center"},
        ],
    },
    {
        "type": "lines",
        "lines": [
            {"name": "door", "start": [0.5, 1.0], "end": [0.5, 0.0], "in_side": "right"},
            {"name": "aisle", "start": [0.0, 0.5], "end": [1.0, 0.5], "in_side": "left"},
        ],
    },
    {
        "type": "slots",
        "slots": [
            {
                "name": f"s{i}",
                "polygon": _square(0.15 * i, 0.05, 0.14),
                "label": "person",
                "capacity": 4,
                "debounce_s": 2,
            }
            for i in range(6)
        ],
    },
    {"type": "events", "gap_s": 60},
]


def chain() -> StageChain:
    specs = [(s.type, s.options()) for s in (StageConfig.model_validate(x) for x in STAGES)]
    return build_chain("bench", specs, StatsRegistry(), labels=LABELS)


def measure(load: int, frames: int) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Per stage and for the whole chain: (median, p90) ms per frame after the warm-up."""
    scene = busy_frames(load, WARMUP_FRAMES + frames)
    stages = chain()
    per_stage: dict[str, list[float]] = {s.name: [] for s in stages.stages}
    whole: list[float] = []
    for i, frame in enumerate(scene):
        result = frame.result(labels=LABELS)
        t_chain = time.perf_counter()
        for stage in stages.stages:
            t0 = time.perf_counter()
            result = stage.process(result, None)
            if i >= WARMUP_FRAMES:
                per_stage[stage.name].append((time.perf_counter() - t0) * 1000)
        if i >= WARMUP_FRAMES:
            whole.append((time.perf_counter() - t_chain) * 1000)
    stages.finish()  # the open sequence ends, as when a source ends
    stages.close()

    def p(values: list[float]) -> tuple[float, float]:
        return float(np.median(values)), float(np.percentile(values, 90))

    return {name: p(v) for name, v in per_stage.items()}, p(whole)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="measured frames per load")
    parser.add_argument("--loads", default="10,50", help="boxes per frame, comma-separated")
    args = parser.parse_args()
    loads = [int(n) for n in args.loads.split(",")]
    rows = {load: measure(load, args.frames) for load in loads}
    names = list(next(iter(rows.values()))[0])
    print(f"{'stage':<8}" + "".join(f" | {n:>3} boxes: p50    p90" for n in loads))
    for name in [*names, "chain"]:
        cells = []
        for load in loads:
            per_stage, whole = rows[load]
            p50, p90 = whole if name == "chain" else per_stage[name]
            cells.append(f" |       {p50:7.3f} {p90:6.3f}")
        print(f"{name:<8}" + "".join(cells))
    if TARGET_LOAD in rows:
        chain_p50 = rows[TARGET_LOAD][1][0]
        verdict = "met" if chain_p50 <= TARGET_MS else "MISSED"
        print(
            f"\ntarget: tracking + all counters <= {TARGET_MS} ms per frame at {TARGET_LOAD} "
            f"boxes: {chain_p50:.3f} ms (median) -> {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
