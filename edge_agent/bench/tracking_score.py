"""Tracking quality against a real oracle: a tracker's output on a generated scene
(``tracking_scenes.py``) scored by ``trackeval``, the MOTChallenge reference implementation of
HOTA (Luiten et al., 2021), CLEAR MOT (MOTA, ID switches) and the ID metrics (IDF1).

``score`` hands trackeval's metric classes the per-frame data its datasets build from
MOTChallenge files (ids renumbered 0..K-1, box IoUs by its own function), without files;
``score_mot_files`` writes real MOTChallenge files and runs trackeval's ``Evaluator`` on them, so
a test can prove the two agree. trackeval is a bench and test dependency, never the agent's:
it is imported inside the functions that use it.

Also here: ``NaiveIouTracker``, the baseline every floor is set against (greedy frame-to-frame
IoU matching, every confident box tracked at once, nothing remembered past one frame).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.analytics.tracking import ClassKeys, Tracker, TrackOptions
from edge_agent.bench.tracking_scenes import Scene

#: What a tracker reports for one frame: (ids (K,), boxes (K, 4) xyxy) of the boxes it tracks.
Tracked = list[tuple[np.ndarray, np.ndarray]]
#: The naive baseline's matching IoU and the score a box needs to be tracked at all (the
#: detector threshold a user without a tracker would use; ours starts tracks at the same 0.5).
NAIVE_MIN_IOU = 0.3
NAIVE_MIN_SCORE = 0.5


@dataclass(frozen=True)
class TrackScores:
    """trackeval's figures for one sequence (HOTA, DetA, AssA, IDF1, MOTA in [0, 1])."""

    hota: float
    deta: float
    assa: float
    idf1: float
    idsw: int
    mota: float


def run_ours(scene: Scene, options: TrackOptions | None = None) -> Tracked:
    """Our tracker on every frame; only boxes held by confirmed tracks are reported."""
    tracker, keys = Tracker(options or TrackOptions()), ClassKeys()
    out: Tracked = []
    for frame in scene.frames:
        det = frame.detections
        ids = tracker.update(
            det.xyxy, det.confidence, keys.of(det.class_id, scene.labels), frame.ts
        )
        held = ids > 0
        out.append((ids[held], det.xyxy[held]))
    return out


class NaiveIouTracker:
    """Greedy frame-to-frame IoU: each box, best pair first, takes the id of the unused box of
    the previous frame it overlaps most (IoU >= ``min_iou``), else a new id. No motion, no
    memory of a box missed for one frame, no wait before an id."""

    def __init__(self, min_iou: float = NAIVE_MIN_IOU, min_score: float = NAIVE_MIN_SCORE):
        self.min_iou, self.min_score = min_iou, min_score
        self._boxes = np.zeros((0, 4))
        self._ids = np.zeros(0, np.int64)
        self._next = 1

    def update(self, xyxy: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, boxes) of the boxes it tracks in this frame."""
        from edge_agent.geometry import box_iou

        boxes = np.asarray(xyxy, np.float64)[confidence >= self.min_score]
        ids = np.zeros(len(boxes), np.int64)
        iou = box_iou(self._boxes, boxes)
        prev_used = np.zeros(len(self._boxes), bool)
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            r, c = divmod(int(flat), len(boxes))
            if iou[r, c] < self.min_iou:
                break
            if not prev_used[r] and ids[c] == 0:
                prev_used[r], ids[c] = True, self._ids[r]
        new = ids == 0
        ids[new] = np.arange(self._next, self._next + int(new.sum()))
        self._next += int(new.sum())
        self._boxes, self._ids = boxes, ids
        return ids, boxes


def run_naive(scene: Scene) -> Tracked:
    tracker = NaiveIouTracker()
    return [tracker.update(f.detections.xyxy, f.detections.confidence) for f in scene.frames]


def _renumber(per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Ids as 0..K-1 in order of first appearance, as trackeval's datasets hand them over."""
    every = np.concatenate([np.zeros(0, np.int64), *per_frame])
    unique = np.unique(every)
    return [np.searchsorted(unique, ids) for ids in per_frame], len(unique)


def score(scene: Scene, tracked: Tracked) -> TrackScores:
    """trackeval's HOTA, CLEAR and Identity metrics of ``tracked`` against the scene's truth."""
    from trackeval.datasets._base_dataset import _BaseDataset
    from trackeval.metrics import CLEAR, HOTA, Identity

    if len(tracked) != len(scene.frames):
        raise ValueError(
            f"tracked must have one entry per frame ({len(scene.frames)}), but got {len(tracked)}"
        )
    gt_ids, n_gt = _renumber([f.gt_ids for f in scene.frames])
    trk_ids, n_trk = _renumber([ids for ids, _ in tracked])
    similarity = [
        _BaseDataset._calculate_box_ious(
            f.gt_xyxy.astype(float), np.asarray(boxes, float), box_format="x0y0x1y1"
        )
        for f, (_, boxes) in zip(scene.frames, tracked, strict=True)
    ]
    data: dict[str, Any] = {
        "num_timesteps": len(scene.frames),
        "num_gt_ids": n_gt,
        "num_tracker_ids": n_trk,
        "num_gt_dets": sum(len(i) for i in gt_ids),
        "num_tracker_dets": sum(len(i) for i in trk_ids),
        "gt_ids": gt_ids,
        "tracker_ids": trk_ids,
        "similarity_scores": similarity,
    }
    quiet = {"PRINT_CONFIG": False}
    hota = HOTA().eval_sequence(data)
    clear = CLEAR(quiet).eval_sequence(data)
    ident = Identity(quiet).eval_sequence(data)
    return TrackScores(
        hota=float(np.mean(hota["HOTA"])),
        deta=float(np.mean(hota["DetA"])),
        assa=float(np.mean(hota["AssA"])),
        idf1=float(ident["IDF1"]),
        idsw=int(clear["IDSW"]),
        mota=float(clear["MOTA"]),
    )


def _mot_rows(frames: list[tuple[np.ndarray, np.ndarray]], tail: str) -> str:
    lines = []
    for t, (ids, xyxy) in enumerate(frames, start=1):
        for i, (x1, y1, x2, y2) in zip(ids, np.asarray(xyxy, float), strict=True):
            lines.append(f"{t},{int(i)},{x1:.4f},{y1:.4f},{x2 - x1:.4f},{y2 - y1:.4f},{tail}")
    return "\n".join(lines) + "\n"


def score_mot_files(scene: Scene, tracked: Tracked, folder: Path) -> TrackScores:
    """The same scores through trackeval's own path: MOTChallenge files in ``folder``
    (gt/<seq>/gt/gt.txt, trackers/<name>/data/<seq>.txt) read by ``MotChallenge2DBox`` and
    evaluated by ``Evaluator``. Slower; used to prove ``score`` equals it."""
    import trackeval

    seq, name = "scene", "tracker"
    gt_file = folder / "gt" / seq / "gt" / "gt.txt"
    trk_file = folder / "trackers" / name / "data" / f"{seq}.txt"
    for path in (gt_file, trk_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    gt_frames = [(f.gt_ids, f.gt_xyxy) for f in scene.frames]
    gt_file.write_text(_mot_rows(gt_frames, "1,1,1"))  # considered, pedestrian, visible
    trk_file.write_text(_mot_rows(tracked, "1,-1,-1,-1"))
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            "GT_FOLDER": str(folder / "gt"),
            "TRACKERS_FOLDER": str(folder / "trackers"),
            "SKIP_SPLIT_FOL": True,
            "SEQ_INFO": {seq: len(scene.frames)},
            "TRACKERS_TO_EVAL": [name],
            "PRINT_CONFIG": False,
        }
    )
    evaluator = trackeval.Evaluator(
        {
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "LOG_ON_ERROR": None,
            "DISPLAY_LESS_PROGRESS": True,
        }
    )
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress unconditionally
        results, _ = evaluator.evaluate([dataset], metrics)
    res = results["MotChallenge2DBox"][name][seq]["pedestrian"]
    return TrackScores(
        hota=float(np.mean(res["HOTA"]["HOTA"])),
        deta=float(np.mean(res["HOTA"]["DetA"])),
        assa=float(np.mean(res["HOTA"]["AssA"])),
        idf1=float(res["Identity"]["IDF1"]),
        idsw=int(res["CLEAR"]["IDSW"]),
        mota=float(res["CLEAR"]["MOTA"]),
    )
