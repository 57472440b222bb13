"""Clips written by OpenCV whose content, and so the toy detector's boxes, is known exactly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FRAMES = 20
BLUE_FROM = 10


def write_clip(path: Path, frames: int = FRAMES) -> Path:
    """640x480: a red block in every frame, a blue one from frame 10 on, both on model windows
    so their boxes are known exactly: red (128, 96)-(256, 192), blue (384, 288)-(512, 384)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for i in range(frames):
        img = np.full((480, 640, 3), 60, np.uint8)
        img[96:192, 128:256] = (0, 0, 255)
        if i >= BLUE_FROM:
            img[288:384, 384:512] = (255, 0, 0)
        writer.write(img)
    writer.release()
    return path


#: The analytics clip (``write_analytics_clip``) at 10 fps: a blue block slides right across
#: the frame and back along one row, a red block (a shelf item) is briefly hidden, then gone
#: for two seconds, then back.
ANALYTICS_FPS = 10
#: Blue's left edge in each frame: the model's window grid (64 px steps), each position held
#: two frames, out to the right, a pause, and back.
_OUT = [x for x in range(0, 513, 64) for _ in range(2)]
BLUE_X = [*_OUT, *[512] * 6, *reversed(_OUT)]
#: Frames with no red block: a brief occlusion (0.2 s), then an absence (2 s).
RED_HIDDEN = frozenset({8, 9})
RED_GONE = frozenset(range(16, 36))
ANALYTICS_FRAMES = len(BLUE_X)
#: Where each block is drawn: red on a model window, blue's row.
RED_BOX = (128, 96, 256, 192)
BLUE_Y = (288, 384)


def write_analytics_clip(path: Path) -> Path:
    """640x480 at ANALYTICS_FPS: blue moves out and back (crossing x = 0.55 once each way), red
    is hidden in RED_HIDDEN and RED_GONE frames. Boxes sit on the toy detector's windows."""
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writer = cv2.VideoWriter(str(path), fourcc, ANALYTICS_FPS, (640, 480))
    x1, y1, x2, y2 = RED_BOX
    for i, bx in enumerate(BLUE_X):
        img = np.full((480, 640, 3), 60, np.uint8)
        if i not in RED_HIDDEN and i not in RED_GONE:
            img[y1:y2, x1:x2] = (0, 0, 255)
        img[BLUE_Y[0] : BLUE_Y[1], bx : bx + 128] = (255, 0, 0)
        writer.write(img)
    writer.release()
    return path
