"""Watching results per model: the old model's baseline, and the new model's probation.

A sink on the agent's post thread: every result names the model that made it (``result.model``),
so the same stream tells how the running model behaves (latency, detections per frame) before a
swap, and feeds the new model's results to its Probation (probation.py) after it. The verdict
is handed to the updater through an Event: nothing here blocks the post thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from edge_agent.types import Detections, Frame, Result
from edge_agent.updates.probation import Baseline, Probation

#: Results remembered per model for the baseline: a few minutes at a few frames per second.
BASELINE_RESULTS = 600


def _finite(result: Result) -> bool:
    """Every score (and box) finite: a NaN model yields NaN scores, or boxes of NaN."""
    pred = result.predictions
    arrays = [pred.confidence, pred.xyxy] if isinstance(pred, Detections) else [pred.scores]
    return all(bool(np.isfinite(a).all()) for a in arrays)


def _found(result: Result) -> int:
    """Detections kept, or classes at or above their threshold (what a result reports)."""
    pred = result.predictions
    if isinstance(pred, Detections):
        return len(pred.confidence)
    threshold = result.class_thresholds if result.class_thresholds is not None else 0.5
    return len(pred.above(threshold))


def _latency_ms(result: Result) -> float:
    return float(sum(result.timing_ms.values()))


class ResultWatch:
    """The agent's sink: ``baseline(model_id)`` and ``start(model_id, probation)``."""

    name = "update-watch"
    needs_frame = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: dict[str, deque[tuple[float, int]]] = {}
        self._model: str | None = None
        self._probation: Probation | None = None
        self.verdict: str | None = None  # a rollback reason, set once
        self.decided = threading.Event()

    def emit(self, result: Result, frame: Frame | None) -> None:
        if not result.inferred:  # the motion gate's stand-in: the model did not run
            return
        latency, found = _latency_ms(result), _found(result)
        with self._lock:
            recent = self._recent.setdefault(result.model, deque(maxlen=BASELINE_RESULTS))
            recent.append((latency, found))
            probation = self._probation if result.model == self._model else None
        if probation is None or self.decided.is_set():
            return
        reason = probation.observe(latency, found, _finite(result), time.monotonic())
        if reason is not None:
            self.verdict = reason
            self.decided.set()

    def finish(self, result: Result) -> None:
        """Nothing to conclude (sinks are told when a source ends)."""

    def close(self) -> None:
        self.decided.set()

    def baseline(self, model_id: str) -> Baseline | None:
        """How `model_id` has done lately, or None before it made any result."""
        with self._lock:
            recent = list(self._recent.get(model_id, ()))
        if not recent:
            return None
        latencies = sorted(lat for lat, _ in recent)
        rate = sum(n for _, n in recent) / len(recent)
        return Baseline(latencies[len(latencies) // 2], rate)

    def start(self, model_id: str, probation: Probation) -> None:
        """Feed `model_id`'s results to `probation` from now on; a fresh verdict."""
        with self._lock:
            self._model, self._probation = model_id, probation
            self.verdict = None
            self.decided.clear()

    def stop(self) -> None:
        with self._lock:
            self._model, self._probation = None, None
