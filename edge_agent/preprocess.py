"""Frame -> input tensor per the manifest's input spec, and the way back to frame pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.bundle.manifest import InputSpec

#: Slack for ``input size / crop_fraction`` before flooring it, so float noise in an exact
#: quotient (224 / 0.8 = 280.00000000000006, but also the odd 9.999...) cannot cost a pixel.
CROP_SIZE_SLACK = 1e-6


@dataclass(frozen=True)
class Transform:
    """How a frame was mapped onto the input tensor: frame_px = (input_px - pad) / scale.

    ``pad`` is the letterbox border, or minus the crop's offset for ``resize: crop``.
    """

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
        # Float inputs: (pixel * scale - mean) / std == (pixel - mean / scale) * (scale / std),
        # one subtract and one multiply per channel plane, written straight into the tensor.
        self._mul = np.array([spec.scale / s for s in spec.std], np.float32)
        self._sub = np.array([m / spec.scale for m in spec.mean], np.float32)
        self._planes = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)  # from BGR

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        """Sized uint8 BGR (H, W, 3) -> float32 (1, ...) tensor in the model's layout.

        Plain numpy into a fresh array, not cv2.dnn.blobFromImage: OpenCV maps and faults in
        ~2 MB of scratch memory on every call, 4x slower at 320x320 (1.3 vs 0.3 ms).
        """
        if self.spec.layout == "NHWC":
            out = np.subtract(image[:, :, self._planes], self._sub, dtype=np.float32)
            out *= self._mul
            return out[np.newaxis]
        h, w = image.shape[:2]
        out = np.empty((1, 3, h, w), np.float32)
        planes = cv2.split(image)
        for c, src in enumerate(self._planes):
            np.subtract(planes[src], self._sub[c], out=out[0, c], dtype=np.float32)
            out[0, c] *= self._mul[c]
        return out

    def _stretch(self, w: int, h: int) -> Transform:
        return Transform(self.spec.width / w, self.spec.height / h, 0.0, 0.0, w, h)

    def _crop(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        """Resize to cover the input size / crop_fraction keeping aspect, then the centre crop.

        As torchvision's Resize(short side) + CenterCrop (transforms/v2/functional/_geometry.py):
        the covering side is exact, the other one truncated (``int``), the crop offset
        ``round((resized - size) / 2)``; timm floors ``size / crop_pct`` for the short side.
        """
        spec = self.spec
        h, w = image.shape[:2]
        cover_w = math.floor(spec.width / spec.crop_fraction + CROP_SIZE_SLACK)
        cover_h = math.floor(spec.height / spec.crop_fraction + CROP_SIZE_SLACK)
        if cover_w * h >= cover_h * w:  # the width needs the larger scale
            new_w, new_h = cover_w, max(cover_h, int(h * cover_w / w))
        else:
            new_w, new_h = max(cover_w, int(w * cover_h / h)), cover_h
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        x0, y0 = round((new_w - spec.width) / 2), round((new_h - spec.height) / 2)
        crop = resized[y0 : y0 + spec.height, x0 : x0 + spec.width]
        return crop, Transform(new_w / w, new_h / h, float(-x0), float(-y0), w, h)

    def resize(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        spec = self.spec
        h, w = image.shape[:2]
        if spec.resize == "stretch":
            resized = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
            return resized, self._stretch(w, h)
        if spec.resize == "crop":
            return self._crop(image)
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
        resized, transform = self.resize(image)
        if spec.dtype == "float32":
            return self._normalise(resized), transform
        if spec.color == "RGB":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        if spec.dtype == "uint8":
            tensor = resized
        else:  # int8 models quantised from uint8 images: shift by the zero point 128
            tensor = (resized.astype(np.int16) - 128).astype(np.int8)
        if spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis]), transform
