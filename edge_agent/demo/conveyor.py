"""The fallback demo clip: red, green and blue blocks riding a conveyor belt.

Made for the hand-built ``colour_blocks`` bundle (rebuilt by ``python -m tools.toy_models``),
which the demo runs while the trained shelf detector is not committed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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


def write_clip(path: Path) -> int:
    """Blocks ride a grey belt from left to right; deterministic, so results are too. Returns
    the frame count."""
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
    return CLIP_FRAMES
