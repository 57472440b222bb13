"""The motion gate: run the model only when the scene changes (``MotionGate.decide``).

Each frame is made a small YCrCb copy (``width`` px wide, averaged down, which divides sensor
noise; then a light blur; see ``_small``) and compared
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

#: Sums a (h, w, 3) image's channels into one (cv2.transform): non-zero where any is.
ANY_CHANNEL = np.ones((1, 3), np.float32)
QUARTILES = np.array([0.25, 0.5, 0.75])
#: The background's quartiles are re-measured once it has taken in this much of newer
#: frames (the sum of accumulateWeighted's weights): the cached ones then lag by at most 5 %
#: of how far the scene moved from the background (1 level for a 20-level drift), where
#: measuring them on every frame was a quarter of the gate's time.
REQUARTILE_DRIFT = 0.05
#: A frame over twice the small copy's size is first sampled to this many times its size
#: (see ``MotionGate._small``).
PRESAMPLE = 2

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
        self._background: np.ndarray | None = None  # float32 (h, w, 3), the small copy's size
        self._size: tuple[int, int] | None = None  # the input frame's (H, W)
        self._counted: np.ndarray | None = None  # uint8 (h, w), 0 where ignored
        self._n_counted = 0
        self._now = -math.inf  # capture time, never decreasing
        self._last_inference = -math.inf
        self._last_motion = -math.inf
        self._then: np.ndarray | None = None  # the background's quartiles, while fresh
        self._drift = 0.0  # how much of newer frames the background took in since
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
            self._then = None
            self.relearned += 1
        else:
            alpha = min(MAX_ADAPT_PER_FRAME, -math.expm1(-dt / self.config.adapt_s))
            if alpha > 0:
                cv2.accumulateWeighted(small, background, alpha)
                self._drift += alpha
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
        per channel, the frame is predicted as ``gain * background + offset``, gain from the
        ratio of the two interquartile ranges and offset from the medians (quantiles, which an
        object under a quarter of the frame barely moves). Quantiles come from 256-bin
        histograms (to a grey level, in 0.02 ms where sorting took 0.6)."""
        q_now = _quartiles(small, self._counted)
        then = cv2.convertScaleAbs(background)  # uint8, rounded: the rest runs on bytes
        if self._then is None or self._drift >= REQUARTILE_DRIFT:
            self._then, self._drift = _quartiles(then, self._counted), 0.0
        q_then = self._then
        spread_then = q_then[2] - q_then[0]
        ratio = (q_now[2] - q_now[0]) / np.maximum(spread_then, MIN_SPREAD)
        gain = np.where(spread_then >= MIN_SPREAD, np.clip(ratio, 1 / MAX_GAIN, MAX_GAIN), 1.0)
        offset = q_now[1] - gain * q_then[1]
        # gain * background + offset per channel in one pass, saturated to 0..255 (numpy's
        # broadcast over a 3-wide last axis took half the gate's time).
        light = np.hstack([np.diag(gain), offset[:, None]]).astype(np.float32)
        predicted = cv2.transform(then, light)
        diff = cv2.absdiff(small, predicted)
        _, far = cv2.threshold(diff, self.config.sensitivity, 1, cv2.THRESH_BINARY)
        far_any = cv2.transform(far, ANY_CHANNEL)  # > 0 where any channel changed
        if self._counted is not None:
            far_any = cv2.bitwise_and(far_any, far_any, mask=self._counted)
        return cv2.countNonZero(far_any) / self._n_counted

    def _infer(self, reason: Reason, changed: float) -> Decision:
        self._last_inference = self._now
        return Decision(True, reason, changed)

    def _small(self, image: np.ndarray) -> np.ndarray:
        """The blurred uint8 YCrCb copy (h, w, 3), ``width`` px wide (never wider than the
        frame). Colour as well as brightness: a red animal on green grass can be as bright as
        the grass (grey 76 against 88), invisible to a grey-level difference, but its Cr is
        over 100 levels away. Resized before converting: the conversion then runs on a few
        thousand pixels.

        A large frame is first sampled (nearest pixel) to twice the small size, then averaged
        2x2 (INTER_AREA): 0.15 ms for 512 to 1920 px wide, where INTER_AREA from the full
        frame takes 0.7-1.6 ms on this machine's 2 cores (INTER_LINEAR first: 0.2 ms, reading
        every pixel). Four-sample averaging and the blur still divide sensor noise by about
        four (noise of 4 grey levels s.d.: 0.85 between two small copies, 0.71 by INTER_AREA)."""
        height, width = image.shape[:2]
        w = min(self.config.width, width)
        h = max(1, round(height * w / width))
        if width > PRESAMPLE * w and height > PRESAMPLE * h:
            image = cv2.resize(
                image, (PRESAMPLE * w, PRESAMPLE * h), interpolation=cv2.INTER_NEAREST
            )
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        small = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb)
        return cv2.GaussianBlur(small, BLUR_KSIZE, 0)

    def _start(self, small: np.ndarray, size: tuple[int, int]) -> None:
        """A new background, and the ignore mask rasterised for this frame size."""
        self._background = small.astype(np.float32)
        self._then = None
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
        self._counted = mask
        self._n_counted = int(np.count_nonzero(mask))


def _quartiles(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The lower quartile, median and upper quartile of each channel of a uint8 (h, w, 3)
    image over the mask's non-zero pixels: (3 quantiles, 3 channels)."""
    out = np.empty((3, 3), np.float64)
    for c in range(3):
        hist = cv2.calcHist([image], [c], mask, [256], [0, 256]).ravel()
        cum = np.cumsum(hist)
        out[:, c] = np.searchsorted(cum, QUARTILES * cum[-1])
    return out
