"""Every box conversion, in one place, vectorised numpy.

Inside the agent a box is ``xyxy``: (x1, y1, x2, y2) in pixels of the source frame, x to the
right and y **down** (image rows). Other layouts are converted on the way in (``boxes_to_xyxy``)
and the Custom Vision shape on the way out (``xyxy_to_custom_vision``).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

BoxFormat = Literal["xyxy", "yxyx", "xywh", "cxcywh"]
BOX_FORMATS: tuple[str, ...] = get_args(BoxFormat)

# --- conversions ------------------------------------------------------------------------------


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(x, y, w, h) top-left form -> (x1, y1, x2, y2), float32."""
    out = xywh.astype(np.float32).copy()
    out[..., 2] = xywh[..., 0] + xywh[..., 2]
    out[..., 3] = xywh[..., 1] + xywh[..., 3]
    return out


def cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) centre form -> (x1, y1, x2, y2), float32."""
    out = np.empty_like(cxcywh, dtype=np.float32)
    half_w = cxcywh[..., 2] / 2
    half_h = cxcywh[..., 3] / 2
    out[..., 0] = cxcywh[..., 0] - half_w
    out[..., 1] = cxcywh[..., 1] - half_h
    out[..., 2] = cxcywh[..., 0] + half_w
    out[..., 3] = cxcywh[..., 1] + half_h
    return out


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (x, y, w, h) top-left form, float32 (OpenCV's Rect layout)."""
    out = xyxy.astype(np.float32).copy()
    out[..., 2:] = out[..., 2:] - out[..., :2]
    return out


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h) centre form, float32 (the SSD box coder's layout)."""
    boxes = xyxy.astype(np.float32)
    out = np.empty_like(boxes)
    out[..., 2:] = boxes[..., 2:] - boxes[..., :2]
    out[..., :2] = boxes[..., :2] + out[..., 2:] / 2
    return out


def boxes_to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """(N, 4) boxes in any supported layout (``BOX_FORMATS``) -> xyxy, float32."""
    if box_format == "xyxy":
        return boxes.astype(np.float32)
    if box_format == "yxyx":
        return boxes[:, [1, 0, 3, 2]].astype(np.float32)
    if box_format == "xywh":
        return xywh_to_xyxy(boxes)
    if box_format == "cxcywh":
        return cxcywh_to_xyxy(boxes)
    raise ValueError(f"box_format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")


def xyxy_to_custom_vision(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels xyxy -> (left, top, width, height) in [0, 1], clipped to the frame."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, but got {width}x{height}")
    scale = np.array([width, height, width, height], np.float32)
    norm = np.clip(xyxy.astype(np.float32) / scale, 0.0, 1.0)
    out = norm.copy()
    out[:, 2] = norm[:, 2] - norm[:, 0]
    out[:, 3] = norm[:, 3] - norm[:, 1]
    return out
