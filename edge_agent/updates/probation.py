"""The probation verdict on a freshly swapped-in model: keep it, or roll back and say why.

A model that passed its trial can still fail on the device's real frames: NaN on some scenes,
latency that starves the camera, or nothing detected at all where the old model kept finding
objects (a bad export, a wrong normalisation). Pure logic, fed one observation per frame by the
updater; it holds no clock and does no I/O, so every rule is tested with made-up times.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

#: Latency p50 over this multiple of the previous model's rolls back (the issue's "twice").
LATENCY_FACTOR = 2.0
#: The previous model's detections per frame above which "detects nothing" is a collapse; below
#: it, a quiet scene (an empty shelf at night) would roll back a good model.
MIN_BASELINE_DETECTION_RATE = 0.2
#: Latencies kept for the p50: recent frames, so a slow start (warm-up) is outgrown.
LATENCY_WINDOW_FRAMES = 200


@dataclass(frozen=True)
class Baseline:
    """The previous model, measured on this device before the swap."""

    latency_ms_p50: float
    detection_rate: float  # detections per frame


class Probation:
    """Watches the new model for ``window_s`` after the swap.

    ``observe`` returns a rollback reason as soon as one holds (and keeps returning it); the
    model ``passed`` once ``window_s`` has gone by since the first observation with at least
    ``min_frames`` frames and no reason. Too few frames (a camera down) keep it on probation.
    """

    def __init__(self, baseline: Baseline, window_s: float, min_frames: int) -> None:
        if window_s <= 0 or min_frames < 1:
            raise ValueError(
                f"window_s must be > 0 and min_frames >= 1, got {window_s} and {min_frames}"
            )
        self.baseline = baseline
        self.window_s = window_s
        self.min_frames = min_frames
        self.reason: str | None = None
        self._start: float | None = None
        self._frames = 0
        self._detections = 0
        self._latencies: list[float] = []

    def observe(self, latency_ms: float, n_detections: int, finite: bool, now: float) -> str | None:
        """One frame of the new model; the rollback reason once one holds, else None."""
        if self.reason is not None:
            return self.reason
        if self._start is None:
            self._start = now
        self._frames += 1
        self._detections += n_detections
        self._latencies.append(latency_ms)
        del self._latencies[:-LATENCY_WINDOW_FRAMES]
        if not finite:
            self.reason = f"the new model output NaN or infinity (frame {self._frames})"
        elif self._frames >= self.min_frames:
            self.reason = self._slow() or self._blind(now)
        return self.reason

    def _slow(self) -> str | None:
        p50 = statistics.median(self._latencies)
        limit = LATENCY_FACTOR * self.baseline.latency_ms_p50
        if p50 > limit:
            return (
                f"latency p50 {p50:.1f} ms is over {LATENCY_FACTOR:g}x the previous model's "
                f"{self.baseline.latency_ms_p50:.1f} ms"
            )
        return None

    def _blind(self, now: float) -> str | None:
        if self._start is None or not self._window_over(now) or self._detections > 0:
            return None
        if self.baseline.detection_rate <= MIN_BASELINE_DETECTION_RATE:
            return None
        return (
            f"the new model detected nothing in {now - self._start:.0f} s "
            f"({self._frames} frames) where the previous model found "
            f"{self.baseline.detection_rate:.2f} per frame"
        )

    def _window_over(self, now: float) -> bool:
        return self._start is not None and now - self._start >= self.window_s

    def passed(self, now: float) -> bool:
        """True once the window is over with enough frames and nothing wrong."""
        if self.reason is not None or self._frames < self.min_frames:
            return False
        if not self._window_over(now):
            return False
        self.reason = self._blind(now)  # zero detections over the whole window is a verdict
        return self.reason is None

    @property
    def frames(self) -> int:
        return self._frames
