"""Tracking quality and cost on this machine, in one run.

    python bench/bench_tracking.py [--seeds 1] [--duration 20] [--cost-frames 2000]

Quality: every generated scene kind (edge_agent/bench/tracking_scenes.py) at 5, 15 and 30 fps
and at 30 fps with half the frames dropped, tracked by ours (default options) and by the naive
IoU tracker, scored by trackeval: HOTA, IDF1, ID switches, MOTA, and distinct ids per true
object (1.00 is one id per object). With several seeds, figures are means (switches summed).

Cost: the tracker alone (``Tracker.update``) and the whole ``track`` stage (``process``: label
keys, stats, the new Detections) in ms per frame at 10 and 50 detections, median and 90th
percentile over ``--cost-frames`` frames after a warm-up, on walkers that stay in view.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from edge_agent.analytics.tracking import ClassKeys, Tracker, TrackOptions, TrackStage
from edge_agent.bench.tracking_scenes import (
    DURATION_S,
    LABELS,
    SCENE_KINDS,
    Noise,
    busy_frames,
    generate,
)
from edge_agent.bench.tracking_score import TrackScores, run_naive, run_ours, score
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext

RATES = [(5, 0.0), (15, 0.0), (30, 0.0), (30, 0.5)]  # (fps, share of frames dropped)
LOADS = (10, 50)  # detections per frame for the cost rows
WARMUP_FRAMES = 100


def _ids_per_object(scene_gt: list[np.ndarray], tracked: list[np.ndarray]) -> float:
    def distinct(arrays: list[np.ndarray]) -> int:
        return len(np.unique(np.concatenate([np.zeros(0, np.int64), *arrays])))

    return distinct(tracked) / max(distinct(scene_gt), 1)


def _cells(scores: list[TrackScores], ids: list[float]) -> str:
    return (
        f"{np.mean([s.hota for s in scores]):5.3f} {np.mean([s.idf1 for s in scores]):5.3f} "
        f"{sum(s.idsw for s in scores):5d} {np.mean([s.mota for s in scores]):5.3f} "
        f"{np.mean(ids):5.2f}"
    )


def quality_table(seeds: int, duration_s: float) -> list[str]:
    head = "HOTA  IDF1   IDSW  MOTA  ids/obj"
    lines = [f"{'scene':10} {'fps':>4} {'drop':>4} | ours  {head} | naive {head}"]
    for kind in SCENE_KINDS:
        for fps, drop in RATES:
            ours, naive, ours_ids, naive_ids = [], [], [], []
            for seed in range(seeds):
                scene = generate(kind, fps, seed, Noise(drop_rate=drop), duration_s)
                truth = [f.gt_ids for f in scene.frames]
                for tracked, scores, ids in (
                    (run_ours(scene), ours, ours_ids),
                    (run_naive(scene), naive, naive_ids),
                ):
                    scores.append(score(scene, tracked))
                    ids.append(_ids_per_object(truth, [i for i, _ in tracked]))
            lines.append(
                f"{kind:10} {fps:>4} {drop:>4.1f} | ours  {_cells(ours, ours_ids)}   "
                f"| naive {_cells(naive, naive_ids)}"
            )
    return lines


def cost_rows(frames: int) -> list[str]:
    lines = [
        f"{'detections':>10} | {'tracker ms p50':>14} {'p90':>6} | {'stage ms p50':>12} {'p90':>6}"
    ]
    for n in LOADS:
        stream = busy_frames(n, frames + WARMUP_FRAMES)
        tracker, keys = Tracker(TrackOptions()), ClassKeys()
        alone = []
        for f in stream:
            det = f.detections
            t0 = time.perf_counter()
            tracker.update(det.xyxy, det.confidence, keys.of(det.class_id, LABELS), f.ts)
            alone.append(time.perf_counter() - t0)
        stage = TrackStage(TrackOptions(), StageContext("bench", StatsRegistry()))
        whole = []
        for f in stream:
            result = f.result()
            t0 = time.perf_counter()
            stage.process(result, None)
            whole.append(time.perf_counter() - t0)
        a, w = (np.array(x[WARMUP_FRAMES:]) * 1000 for x in (alone, whole))
        lines.append(
            f"{n:>10} | {np.median(a):14.3f} {np.percentile(a, 90):6.3f} | "
            f"{np.median(w):12.3f} {np.percentile(w, 90):6.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="scenes per kind and rate")
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds per scene")
    parser.add_argument("--cost-frames", type=int, default=2000, help="frames timed per load")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.duration <= 0 or args.cost_frames < 1:
        parser.error("--seeds, --duration and --cost-frames must be positive")
    print("\n".join(quality_table(args.seeds, args.duration)))
    print()
    print("\n".join(cost_rows(args.cost_frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
