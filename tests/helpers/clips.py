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
