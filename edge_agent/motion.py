"""The motion gate: run the model only when the scene changes (``MotionGate.decide``).

Each frame is made a small grayscale copy (``width`` px wide, INTER_AREA, which averages the
pixels it drops and so divides sensor noise by the scale factor; then a light blur) and compared
with a background that follows the scene with a time constant of ``adapt_s`` seconds of capture
time (``cv2.accumulateWeighted``, at most half a change folded in per frame, so a moving object
never becomes background at once, whatever the frame rate).

Lighting. A cloud or a switched lamp moves every pixel at once, by about the same offset and
gain, so:

- the frame is predicted from the background as ``gain * background + offset`` before
  thresholding: the gain is the ratio of the two interquartile ranges and the offset matches
  the medians, all over the counted pixels. Quantiles are what an object covering a small part
  of the frame barely moves, so it stays changed while a uniform brightening or a lamp's gain
  leaves nothing, and a slow drift never accumulates;
- what is left over (shadows, auto exposure, saturated highlights) changes most of the frame
  when it is large; a frame where ``lighting_area`` or more changed is taken for lighting, the
  background is re-learnt from it at once, and it is not motion. The next frame is compared
  with the new light, so a change of light is never a storm of detections (zero motion frames
  in tests/test_motion.py). The price: an object filling most of the frame at once also reads
  as lighting (the following frames, compared with the re-learnt background, see it move).

The decision: the first frame of a size initialises the background and is inferred ("warmup");
changed >= ``min_area`` is "motion"; within ``hold_s`` of the last motion, "hold"; ``keepalive_s``
since the last inference, "keepalive"; otherwise "still", and the model is skipped. Time is the
frames' capture time; a timestamp that goes backwards counts as no time passing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edge_agent.config.motion import MotionConfig

#: Blur of the small copy: 3x3 tames the noise left after downscaling and a pixel's jitter of
#: one sample across an edge, without erasing a small object (a 2 % object at 160 px is 22 px).
BLUR_KSIZE = (3, 3)
#: Most of a change one frame may fold into the background: at a low frame rate (a trap at
#: 1 frame in 10 s) the time-based rate would otherwise take a passing animal in at once.
MAX_ADAPT_PER_FRAME = 0.5

#: Interquartile range (grey levels) below which a scene is too flat to measure a gain from:
#: the light is then taken to change by an offset only.
MIN_SPREAD = 8.0
#: Largest gain change the light may make between the background and a frame (lights on in
#: a dim room are about 2x); a larger one is left to the lighting_area rule.
MAX_GAIN = 3.0

#: Quantiles are taken over every 4th counted pixel: 3600 of 160x90 estimate them to well under
#: a grey level, and partitioning all of them twice was a third of the gate's time (0.4 ms).
QUANTILE_STRIDE = 4

Reason = Literal["warmup", "motion", "hold", "keepalive", "still"]


@dataclass(frozen=True)
class Decision:
    """Whether to run the model on a frame, why, and the fraction of the counted (not
    ignored) frame that changed (0.0 on a warm-up frame)."""

    infer: bool
    reason: Reason
    changed: float


class MotionGate:
    """One source's gate: state is per instance (one gate per camera); not thread-safe, it
    lives on that source's capture thread."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._background: np.ndarray | None = None  # float32 (h, w), the small copy's size
        self._size: tuple[int, int] | None = None  # the input frame's (H, W)
        self._counted: np.ndarray | None = None  # bool (h*w,), False where ignored
        self._n_counted = 0
        self._now = -math.inf  # capture time, never decreasing
        self._last_inference = -math.inf
        self._last_motion = -math.inf
        #: How many frames were taken for a lighting change (the background re-learnt).
        self.relearned = 0

    def decide(self, image: np.ndarray, ts: float) -> Decision:
        """The verdict for one BGR uint8 frame (H, W, 3) captured at ``ts`` (s)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image must be a BGR uint8 array of shape (H, W, 3), but got {image.dtype} "
                f"{image.shape}"
            )
        dt = max(0.0, ts - self._now) if self._now > -math.inf else 0.0
        self._now = max(self._now, ts)
        small = self._small(image)
        if self._background is None or self._size != image.shape[:2]:
            self._start(small, image.shape[:2])
            return self._infer("warmup", 0.0)
        background = self._background
        changed = self._changed(small, background) if self._n_counted else 0.0
        if changed >= self.config.lighting_area:
            background[...] = small
            self.relearned += 1
        else:
            alpha = min(MAX_ADAPT_PER_FRAME, -math.expm1(-dt / self.config.adapt_s))
            if alpha > 0:
                cv2.accumulateWeighted(small, background, alpha)
            if changed >= self.config.min_area:
                self._last_motion = self._now
                return self._infer("motion", changed)
        if self._now - self._last_motion <= self.config.hold_s:
            return self._infer("hold", changed)
        if self._now - self._last_inference >= self.config.keepalive_s:
            return self._infer("keepalive", changed)
        return Decision(False, "still", changed)

    def _changed(self, small: np.ndarray, background: np.ndarray) -> float:
        """The fraction of counted pixels that changed, once the light's change is removed:
        the frame is predicted as ``gain * background + offset``, gain from the ratio of the
        two interquartile ranges and offset from the medians (quantiles, which an object under
        a quarter of the frame barely moves)."""
        pixels = small.shape[0] * small.shape[1]
        now_all, then_all = small.reshape(pixels, -1), background.reshape(pixels, -1)
        if self._counted is not None:
            now_all, then_all = now_all[self._counted], then_all[self._counted]
        changed = np.zeros(len(now_all), bool)
        for c in range(now_all.shape[1]):  # luma, then the two colour differences
            now, then = now_all[:, c], then_all[:, c]
            some_now, some_then = now[::QUANTILE_STRIDE], then[::QUANTILE_STRIDE]
            m = len(some_now)
            ks = [m // 4, m // 2, (3 * m) // 4]
            q_now, q_then = np.partition(some_now, ks)[ks], np.partition(some_then, ks)[ks]
            spread_then = float(q_then[2] - q_then[0])
            gain = 1.0
            if spread_then >= MIN_SPREAD:
                gain = min(MAX_GAIN, max(1 / MAX_GAIN, float(q_now[2] - q_now[0]) / spread_then))
            offset = float(q_now[1]) - gain * float(q_then[1])
            predicted = np.clip(then * gain + offset, 0, 255)
            changed |= np.abs(now - predicted) > self.config.sensitivity
        return float(np.count_nonzero(changed)) / self._n_counted

    def _infer(self, reason: Reason, changed: float) -> Decision:
        self._last_inference = self._now
        return Decision(True, reason, changed)

    def _small(self, image: np.ndarray) -> np.ndarray:
        """The blurred float32 YCrCb copy (h, w, 3), ``width`` px wide (never wider than the
        frame). Colour as well as brightness: a red animal on green grass can be as bright as
        the grass (grey 76 against 88), invisible to a grey-level difference, but its Cr is
        over 100 levels away. Resized before converting: the conversion then runs on a few
        thousand pixels."""
        height, width = image.shape[:2]
        w = min(self.config.width, width)
        h = max(1, round(height * w / width))
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        small = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb)
        return cv2.GaussianBlur(small, BLUR_KSIZE, 0).astype(np.float32)

    def _start(self, small: np.ndarray, size: tuple[int, int]) -> None:
        """A new background, and the ignore mask rasterised for this frame size."""
        self._background = small.copy()
        self._size = size
        self._last_motion = -math.inf
        h, w = small.shape[:2]
        if not self.config.ignore:
            self._counted, self._n_counted = None, h * w
            return
        mask = np.ones((h, w), np.uint8)
        polygons = [
            np.round(np.asarray(p, np.float64) * (w, h)).astype(np.int32)
            for p in self.config.ignore
        ]
        cv2.fillPoly(mask, polygons, 0)
        self._counted = mask.reshape(-1).astype(bool)
        self._n_counted = int(np.count_nonzero(self._counted))
