"""Scene canvas that knows which object owns each pixel, so boxes are exact and occlusion known.

Objects are drawn as sprites (colour + mask) in back-to-front order. ``ids`` records, per pixel,
the object drawn last there (0 = background or an occluder), so after every occluder, crop and
warp, an object's box is the bounding box of the pixels it still owns, and its visible fraction
is those pixels over the pixels its sprite had.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Color = tuple[int, int, int]
#: What a scene renderer returns per object: (label, xyxy pixels, visible fraction).
RawBox = tuple[str, tuple[float, float, float, float], float]
#: Smallest side (pixels) of a box worth labelling; smaller is noise to a 320 px detector.
MIN_BOX_SIDE_PX = 4


@dataclass
class Drawn:
    """One labelled object: its class, its sprite's pixel count, and where it was pasted."""

    label: str
    full_area: int
    region: tuple[int, int, int, int]  # x1, y1, x2, y2 of the pasted sprite, may leave the image


class Sprite:
    """A local drawing surface in unit coordinates: (0, 0) top-left, (1, 1) bottom-right."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = max(2, int(width)), max(2, int(height))
        self.image = np.zeros((self.h, self.w, 3), np.uint8)
        self.mask = np.zeros((self.h, self.w), np.uint8)

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.w), round(y * self.h)

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, color: Color, angle: float = 0.0
    ) -> None:
        axes = (max(1, round(rx * self.w)), max(1, round(ry * self.h)))
        for img, col in ((self.image, color), (self.mask, 255)):
            cv2.ellipse(img, self._pt(cx, cy), axes, angle, 0, 360, col, -1, cv2.LINE_8)

    def poly(self, points: list[tuple[float, float]], color: Color) -> None:
        pts = np.array([self._pt(x, y) for x, y in points], np.int32)
        cv2.fillPoly(self.image, [pts], color, cv2.LINE_8)
        cv2.fillPoly(self.mask, [pts], 255, cv2.LINE_8)

    def rect(self, x1: float, y1: float, x2: float, y2: float, color: Color) -> None:
        self.poly([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], color)

    def line(self, p: tuple[float, float], q: tuple[float, float], color: Color, px: int) -> None:
        for img, col in ((self.image, color), (self.mask, 255)):
            cv2.line(img, self._pt(*p), self._pt(*q), col, max(1, px), cv2.LINE_8)

    def paint(self, x1: float, y1: float, x2: float, y2: float, color: Color) -> None:
        """Colour a rectangle only where the sprite already is (a label on a can)."""
        a, b = self._pt(x1, y1)
        c, d = self._pt(x2, y2)
        region = self.mask[b:d, a:c] > 0
        self.image[b:d, a:c][region] = color

    def text(self, text: str, x: float, y: float, height: float, color: Color) -> None:
        """Text whose cap height is ``height`` of the sprite, drawn only on the sprite."""
        scale = max(0.2, height * self.h / 22.0)  # Hershey simplex caps are ~22 px at scale 1
        thickness = max(1, round(scale * 1.5))
        layer = self.image.copy()
        cv2.putText(layer, text, self._pt(x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness)
        inside = self.mask > 0
        self.image[inside] = layer[inside]

    def shade(self, rng: np.random.Generator, strength: float) -> None:
        """Horizontal cylinder-like shading: bright near the left-centre, darker at the edges."""
        xs = np.linspace(-1.0, 1.0, self.w, dtype=np.float32)
        centre = rng.uniform(-0.5, 0.0)
        gain = 1.0 + strength * (0.6 - np.abs(xs - centre) ** 1.5)
        self.image = np.clip(self.image * gain[None, :, None], 0, 255).astype(np.uint8)

    def flipped(self) -> Sprite:
        out = Sprite(self.w, self.h)
        out.image, out.mask = self.image[:, ::-1].copy(), self.mask[:, ::-1].copy()
        return out


class Canvas:
    """The scene image plus a per-pixel owner map; see the module docstring."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.ids: np.ndarray = np.zeros(image.shape[:2], np.uint16)
        self.objects: list[Drawn] = []

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    def paste(self, sprite: Sprite, x: int, y: int, label: str | None, blur_px: int = 0) -> None:
        """Draw ``sprite`` with its top-left at (x, y); ``label`` None makes it an occluder.

        ``blur_px`` smears the colour horizontally (motion blur); ownership stays the hard mask,
        so the box is the object as drawn, not its faint trail.
        """
        w, h = self.size
        x1, y1, x2, y2 = max(0, x), max(0, y), min(w, x + sprite.w), min(h, y + sprite.h)
        if label is not None:
            self.objects.append(
                Drawn(label, int(np.count_nonzero(sprite.mask)), (x, y, x + sprite.w, y + sprite.h))
            )
        if x1 >= x2 or y1 >= y2:
            return
        sx, sy = x1 - x, y1 - y
        mask = sprite.mask[sy : sy + y2 - y1, sx : sx + x2 - x1]
        colour = sprite.image[sy : sy + y2 - y1, sx : sx + x2 - x1]
        target = self.image[y1:y2, x1:x2]
        hard = mask > 0
        if blur_px > 1:
            kernel = np.full((1, blur_px), 1.0 / blur_px, np.float32)
            alpha = cv2.filter2D(mask.astype(np.float32) / 255.0, -1, kernel)[..., None]
            smeared = cv2.filter2D(
                colour.astype(np.float32) * (mask[..., None] / 255.0), -1, kernel
            )
            colour_f = smeared / np.maximum(alpha, 1e-3)
            blended = target * (1.0 - alpha) + colour_f * alpha
            target[:] = np.clip(blended, 0, 255).astype(np.uint8)
        else:
            target[hard] = colour[hard]
        self.ids[y1:y2, x1:x2][hard] = len(self.objects) if label is not None else 0

    def occlude(self, mask: np.ndarray) -> None:
        """Pixels already painted by the caller under ``mask`` no longer belong to any object."""
        self.ids[mask > 0] = 0

    def warp(self, matrix: np.ndarray) -> None:
        """Apply a perspective transform to the image and, exactly, to pixel ownership."""
        w, h = self.size
        self.image = cv2.warpPerspective(
            self.image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        self.ids = cv2.warpPerspective(self.ids, matrix, (w, h), flags=cv2.INTER_NEAREST)
        for obj in self.objects:
            x1, y1, x2, y2 = obj.region
            corners = np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float32)
            moved = cv2.perspectiveTransform(corners, matrix)[0]
            lo, hi = np.floor(moved.min(0)) - 2, np.ceil(moved.max(0)) + 2
            obj.region = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))

    def boxes(self, min_visible: float) -> list[RawBox]:
        """(label, xyxy, visible fraction) of objects at least ``min_visible`` visible."""
        w, h = self.size
        out = []
        for k, obj in enumerate(self.objects, start=1):
            x1, y1, x2, y2 = obj.region
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            if x1 >= x2 or y1 >= y2 or obj.full_area == 0:
                continue
            owned = (self.ids[y1:y2, x1:x2] == k).astype(np.uint8)
            visible = int(np.count_nonzero(owned))
            if visible == 0 or visible / obj.full_area < min_visible:
                continue
            bx, by, bw, bh = cv2.boundingRect(owned)
            if min(bw, bh) < MIN_BOX_SIDE_PX:
                continue
            xyxy = (float(x1 + bx), float(y1 + by), float(x1 + bx + bw), float(y1 + by + bh))
            out.append((obj.label, xyxy, visible / obj.full_area))
        return out


def smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1], float32 (h, w): random values on a coarse grid, cubic upsampled."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def fractal_noise(rng: np.random.Generator, w: int, h: int, octaves: int = 4) -> np.ndarray:
    """Sum of value-noise octaves (coarse to fine, halving weights), normalised to [0, 1]."""
    total = np.zeros((h, w), np.float32)
    for i in range(octaves):
        total += smooth_noise(rng, w, h, 2 * 2**i) * 0.5**i
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def lighting(rng: np.random.Generator, image: np.ndarray, spread: float) -> np.ndarray:
    """Uneven light: a smooth gain field around 1 (+-spread), a colour cast, sensor noise."""
    h, w = image.shape[:2]
    gain = 1.0 + spread * (2.0 * smooth_noise(rng, w, h, 2) - 1.0)
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(1.0, 5.0)  # luma
    out = image.astype(np.float32) * gain[..., None] * cast * rng.uniform(0.75, 1.2) + noise
    return np.clip(out, 0, 255).astype(np.uint8)


def mild_perspective(rng: np.random.Generator, w: int, h: int, amount: float) -> np.ndarray:
    """A homography that maps a slightly skewed quad inside the image onto the whole image."""
    jitter = rng.uniform(0.0, amount, (4, 2)) * np.array([w, h], np.float32)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    return cv2.getPerspectiveTransform(src + inward * jitter.astype(np.float32), src)


def scaled(colour: Color, factor: float) -> Color:
    """``colour`` darkened (factor < 1) or brightened, clipped to 0..255."""
    r = [min(255, max(0, round(c * factor))) for c in colour]
    return r[0], r[1], r[2]


def jitter_colour(rng: np.random.Generator, colour: Color, amount: int) -> Color:
    c = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])
