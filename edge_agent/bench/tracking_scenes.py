"""Synthetic tracking sequences with exact ground truth: the oracle the tracker is scored on.

Objects ("actors") move along piecewise-linear paths in continuous time; a scene is sampled
at any frame rate, so the *same* motion can be seen at 5, 15 and 30 fps. Each frame gives what
a detector would report (boxes jittered, some missed, scores that dip when an object is
partly hidden, spurious boxes) beside the truth (every object a viewer could see, with its
exact box and identity). Seeded and deterministic: the actors depend on (kind, seed) only, the
detector's noise also on the frame rate.

Scene kinds (``SCENE_KINDS``):

- ``crossing``: people walk across the frame both ways in shared lanes and pass each other,
  the nearer one hiding the other for a moment.
- ``occlusion``: people stand still while others walk behind them, hidden for a few frames.
- ``reentry``: people walk out of the frame and come back through the same edge after 0.3 to
  3 s, and pass behind pillars (scenery, never detected). The truth keeps one identity per
  person throughout: an IoU tracker can only keep it across gaps shorter than its ``lost_s``
  in which the object keeps its course (the pillars); someone who turns back outside the frame
  comes back as a new track, which the ID metrics charge to every tracker alike.
- ``crowd``: a score of people and cars wander with changing velocities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_agent.types import Detections, Result

SceneKind = Literal["crossing", "occlusion", "reentry", "crowd"]
SCENE_KINDS: tuple[SceneKind, ...] = ("crossing", "occlusion", "reentry", "crowd")
LABELS = ["person", "car"]
FRAME_W, FRAME_H = 1280, 720
#: Seconds of motion per scene by default: long enough for births, crossings and re-entries.
DURATION_S = 20.0
#: Fraction of an object that must be visible (in the frame, not hidden) to be in the truth
#: and detectable; less than this, no detector sees it and no tracker is charged for it.
MIN_VISIBLE = 0.3
#: Scores of detections of fully visible objects are drawn from this range.
SCORE_RANGE = (0.6, 0.95)
#: Range of a dipped score (blur, pose): under the tracker's default high threshold.
DIP_RANGE = (0.15, 0.45)
#: Range of a spurious box's score: most under 0.5, some above (those try to start tracks).
FALSE_SCORE_RANGE = (0.1, 0.65)


@dataclass(frozen=True)
class Noise:
    """What the simulated detector gets wrong; each field is a rate in [0, 1] or a scale."""

    miss_rate: float = 0.1  # a visible object is not detected in a frame
    false_positives: float = 0.5  # mean spurious boxes per frame (Poisson)
    jitter: float = 0.04  # std of each box edge, as a fraction of the box's width or height
    dip_rate: float = 0.1  # a detection's score dips under 0.5
    drop_rate: float = 0.0  # whole frames never delivered (a live source dropping stale ones)


@dataclass(frozen=True)
class SceneFrame:
    """One delivered frame: the detector's output and the truth."""

    seq: int
    ts: float
    detections: Detections
    det_gt: np.ndarray  # (N,) the true id each detection came from; -1 for a spurious box
    gt_ids: np.ndarray  # (M,) int64 ids of the objects visible in this frame
    gt_xyxy: np.ndarray  # (M, 4) float64 their exact boxes, clipped to the frame

    def result(self, source_id: str = "bench", labels: list[str] = LABELS) -> Result:
        """This frame's detections as a fresh Result, to run through a stage chain."""
        return Result(
            source_id,
            self.seq,
            self.ts,
            "scene",
            "detect",
            list(labels),
            (FRAME_W, FRAME_H),
            self.detections,
        )


@dataclass(frozen=True)
class Scene:
    kind: str
    fps: float
    seed: int
    frames: list[SceneFrame]
    labels: list[str]


@dataclass(frozen=True)
class Actor:
    """One object: its size, class, depth (smaller is nearer) and its path of (t, cx, cy)."""

    gt_id: int
    class_id: int
    width: float
    height: float
    depth: float
    times: np.ndarray  # (K,) increasing seconds; the actor exists from times[0] to times[-1]
    centres: np.ndarray  # (K, 2) bottom-centre of its box at those times


def _walker(
    rng: np.random.Generator, gt_id: int, depth: float, scale: float = 1.0
) -> tuple[int, int, float, float, float]:
    width = rng.uniform(45, 75) * scale
    return gt_id, 0, width, width * rng.uniform(2.2, 2.8), depth


def _crossing(rng: np.random.Generator) -> tuple[list[Actor], list[np.ndarray]]:
    actors = []
    lanes = (330.0, 480.0, 640.0)
    for gt_id in range(1, 15):
        ident = _walker(rng, gt_id, rng.uniform(0, 1))
        start, speed = rng.uniform(-4, DURATION_S - 4), rng.uniform(80, 200)
        side = rng.choice([-1.0, 1.0])
        x0, x1 = (-100.0, FRAME_W + 100.0)[:: int(side)]
        y = rng.choice(lanes) + rng.uniform(-25, 25)
        y_end = y + rng.uniform(-60, 60)
        duration = (FRAME_W + 200) / speed
        actors.append(
            Actor(*ident, np.array([start, start + duration]), np.array([[x0, y], [x1, y_end]]))
        )
    return actors, []


def _occlusion(rng: np.random.Generator) -> tuple[list[Actor], list[np.ndarray]]:
    actors, lanes = [], (380.0, 560.0)
    gt_id = 0
    for lane in lanes:  # bystanders standing in front
        for x in rng.uniform(150, FRAME_W - 150, 3):
            gt_id += 1
            ident = _walker(rng, gt_id, 0.1, 1.1)
            actors.append(Actor(*ident, np.array([0.0, DURATION_S]), np.array([[x, lane]] * 2)))
    for _ in range(10):  # walkers passing behind them
        gt_id += 1
        ident = _walker(rng, gt_id, 0.9, 0.95)
        start, speed = rng.uniform(-3, DURATION_S - 4), rng.uniform(70, 160)
        lane = rng.choice(lanes) - rng.uniform(0, 15)
        x0, x1 = (-80.0, FRAME_W + 80.0)[:: int(rng.choice([-1, 1]))]
        end = start + (FRAME_W + 160) / speed
        actors.append(Actor(*ident, np.array([start, end]), np.array([[x0, lane], [x1, lane]])))
    return actors, []


def _reentry(rng: np.random.Generator) -> tuple[list[Actor], list[np.ndarray]]:
    pillars = [np.array([x, 150.0, x + 90, FRAME_H]) for x in (400.0, 820.0)]
    actors = []
    for gt_id in range(1, 11):
        ident = _walker(rng, gt_id, 0.5)
        speed, y = rng.uniform(90, 180), rng.uniform(380, 650)
        near, far = (-60.0, FRAME_W + 60.0)[:: int(rng.choice([-1, 1]))]
        start = rng.uniform(-2, DURATION_S / 2)
        t_out = start + (FRAME_W + 120) / speed  # across the frame and out at the far edge,
        t_back = t_out + rng.uniform(0.3, 3.0)  # a while outside, then back the same way
        times = np.array([start, t_out, t_back, t_back + (FRAME_W + 120) / speed])
        centres = np.array([[near, y], [far, y], [far, y], [near, y]])
        actors.append(Actor(*ident, times, centres))
    return actors, pillars


def _crowd(rng: np.random.Generator) -> tuple[list[Actor], list[np.ndarray]]:
    actors = []
    for gt_id in range(1, 21):
        car = gt_id % 5 == 0
        width = rng.uniform(160, 240) if car else rng.uniform(40, 70)
        height = width * (rng.uniform(0.5, 0.7) if car else rng.uniform(2.2, 2.8))
        start = rng.uniform(-5, DURATION_S - 5)
        times, point = [start], rng.uniform([100, 250], [FRAME_W - 100, FRAME_H - 20])
        centres = [point]
        while times[-1] < start + rng.uniform(6, 14):
            step = rng.uniform(1.0, 2.0)
            speed = rng.uniform(100, 300) if car else rng.uniform(40, 150)
            angle = rng.uniform(0, 2 * np.pi)
            point = np.clip(
                point + speed * step * np.array([np.cos(angle), np.sin(angle)]),
                [-150, 200],
                [FRAME_W + 150, FRAME_H],
            )
            times.append(times[-1] + step)
            centres.append(point)
        ident = (gt_id, int(car), width, height, rng.uniform(0, 1))
        actors.append(Actor(*ident, np.array(times), np.array(centres)))
    return actors, []


_BUILDERS = {"crossing": _crossing, "occlusion": _occlusion, "reentry": _reentry, "crowd": _crowd}


def scene_actors(kind: str, seed: int) -> tuple[list[Actor], list[np.ndarray]]:
    """The actors of a scene and its scenery occluders (xyxy), by kind and seed only."""
    if kind not in _BUILDERS:
        raise ValueError(f"scene kind must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    return _BUILDERS[kind](np.random.default_rng([seed, SCENE_KINDS.index(kind)]))


#: Extra chance of missing an object per unit of it hidden (a half-hidden person is missed
#: 20 % more often than a fully visible one).
HIDDEN_MISS = 0.4


def _paths(actors: list[Actor], ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, F, 4) full boxes of every actor at every time, and (A, F) whether it exists."""
    boxes = np.zeros((len(actors), len(ts), 4))
    exists = np.zeros((len(actors), len(ts)), bool)
    for i, a in enumerate(actors):
        cx = np.interp(ts, a.times, a.centres[:, 0])
        bottom = np.interp(ts, a.times, a.centres[:, 1])
        boxes[i] = np.stack([cx - a.width / 2, bottom - a.height, cx + a.width / 2, bottom], 1)
        exists[i] = (ts >= a.times[0]) & (ts <= a.times[-1])
    return boxes, exists


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas of xyxy boxes."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    side = np.clip(hi - lo, 0, None)
    return side[..., 0] * side[..., 1]


def _visible(
    full: np.ndarray, depth: np.ndarray, pillars: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each box clipped to the frame and the fraction of it a viewer sees: inside the frame,
    minus what nearer actors and scenery cover (overlapping covers may count twice: a slight
    over-estimate of hiding, the same for every tracker)."""
    clipped = np.clip(full, 0, [FRAME_W, FRAME_H, FRAME_W, FRAME_H])
    area = np.prod(full[:, 2:] - full[:, :2], axis=1)
    nearer = depth[None, :] < depth[:, None]
    covered = (_intersection(clipped, clipped) * nearer).sum(1)
    if len(pillars):
        covered += _intersection(clipped, pillars).sum(1)
    seen = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1) - covered
    return clipped, np.clip(seen / area, 0, 1)


def generate(
    kind: str,
    fps: float,
    seed: int = 0,
    noise: Noise | None = None,
    duration_s: float = DURATION_S,
) -> Scene:
    """The scene ``kind`` (seeded) filmed at ``fps`` for ``duration_s``, with ``noise``."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, but got {fps}")
    noise = noise or Noise()
    actors, pillar_list = scene_actors(kind, seed)
    pillars = np.array(pillar_list).reshape(-1, 4)
    rng = np.random.default_rng([seed, SCENE_KINDS.index(kind), round(fps * 1000), 1])
    ts = np.arange(int(duration_s * fps)) / fps
    full, exists = _paths(actors, ts)
    ids = np.array([a.gt_id for a in actors], np.int64)
    classes = np.array([a.class_id for a in actors], np.int32)
    depth = np.array([a.depth for a in actors])
    frames = []
    for f, t in enumerate(ts):
        if rng.random() < noise.drop_rate:
            continue
        here = np.flatnonzero(exists[:, f])
        clipped, visible = _visible(full[here, f], depth[here], pillars)
        truth = visible >= MIN_VISIBLE
        p_miss = np.clip(noise.miss_rate + HIDDEN_MISS * (1 - visible), 0, 1)
        seen = truth & (rng.random(len(here)) >= p_miss)
        det_boxes, who = clipped[seen], here[seen]
        size = np.tile(full[who, f, 2:] - full[who, f, :2], 2)
        det_boxes = det_boxes + rng.normal(0, noise.jitter, det_boxes.shape) * size
        score = rng.uniform(*SCORE_RANGE, len(who)) * (0.5 + 0.5 * visible[seen])
        dips = rng.random(len(who)) < noise.dip_rate
        score[dips] = rng.uniform(*DIP_RANGE, int(dips.sum()))
        n_false = rng.poisson(noise.false_positives)
        width = rng.uniform(40, 120, n_false)
        corner = rng.uniform([0, 0], [FRAME_W - 120, FRAME_H - 300], (n_false, 2))
        wh = np.stack([width, width * rng.uniform(1.0, 2.5, n_false)], 1)
        order = rng.permutation(len(who) + n_false)
        frames.append(
            SceneFrame(
                seq=f,
                ts=float(t),
                detections=Detections(
                    xyxy=np.concatenate([det_boxes, np.hstack([corner, corner + wh])])[order],
                    confidence=np.concatenate([score, rng.uniform(*FALSE_SCORE_RANGE, n_false)])[
                        order
                    ],
                    class_id=np.concatenate([classes[who], rng.integers(0, len(LABELS), n_false)])[
                        order
                    ],
                ),
                det_gt=np.concatenate([ids[who], np.full(n_false, -1, np.int64)])[order],
                gt_ids=ids[here[truth]],
                gt_xyxy=clipped[truth],
            )
        )
    return Scene(kind, fps, seed, frames, list(LABELS))


def busy_frames(n_objects: int, count: int, fps: float = 15.0, seed: int = 0) -> list[SceneFrame]:
    """``count`` frames with exactly ``n_objects`` detections each: people walking in straight
    lines and bouncing off the frame's edges, detected every frame with jitter. For measuring
    cost at a fixed load (``bench``), not quality: no misses, no occlusion."""
    rng = np.random.default_rng([seed, n_objects])
    width = rng.uniform(30, 60, n_objects)
    size = np.stack([width, width * 2.5], 1)
    span = np.array([FRAME_W, FRAME_H]) - size
    start = rng.uniform(0, 1, (n_objects, 2)) * span
    velocity = rng.uniform(-120, 120, (n_objects, 2))
    ids = np.arange(1, n_objects + 1, dtype=np.int64)
    frames = []
    for f in range(count):
        ts = f / fps
        travel = np.abs((start + velocity * ts) % (2 * span))  # bounce: a triangle wave
        corner = np.where(travel > span, 2 * span - travel, travel)
        xyxy = np.hstack([corner, corner + size])
        noisy = xyxy + rng.normal(0, 0.02, xyxy.shape) * np.tile(size, 2)
        det = Detections(noisy, rng.uniform(0.6, 0.95, n_objects), np.zeros(n_objects, np.int32))
        frames.append(SceneFrame(f, ts, det, ids, ids, xyxy))
    return frames
