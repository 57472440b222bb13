"""Trail-camera scenes: deer, boar, fox and bird over textured outdoor ground.

The silhouettes differ as they do in the field (deer: long legs and neck; boar: heavy low body
and wedge head; fox: slim body, pointed ears, long brushy tail; bird: small, perched or in
flight). About 40 % of images are night infrared: grey, bright vegetation, eye shine, heavy
noise and vignette. Animals run (motion blur), leave the frame at the borders, stand behind
grass and trunks, and the camera's info bar hides the bottom strip.
"""

from __future__ import annotations

import cv2
import numpy as np

from trainer.synth.canvas import (
    Canvas,
    RawBox,
    Sprite,
    fractal_noise,
    jitter_colour,
    lighting,
    scaled,
    smooth_noise,
)

CLASSES = ["deer", "boar", "fox", "bird"]
NIGHT_P = 0.4
MOTION_BLUR_P = 0.3
MAX_ANIMALS = 4
EMPTY_SCENE_P = 0.1  # camera traps fire on wind and light too: background images matter
INFO_BAR_P = 0.5
GRAIN = 28.0  # amplitude (grey levels) of per-pixel ground grain
#: Body height as a fraction of image height at depth scale 1, and width over height.
SIZE = {"deer": (0.42, 1.15), "boar": (0.28, 1.6), "fox": (0.2, 1.9), "bird": (0.1, 1.3)}
Colour = tuple[int, int, int]


def _deer(s: Sprite, fur: Colour, eye: Colour, rng: np.random.Generator) -> None:
    dark = scaled(fur, 0.7)
    for x in (0.27, 0.35, 0.65, 0.73):
        s.rect(x, 0.5, x + 0.035, 1.0, dark)
    s.ellipse(0.5, 0.45, 0.28, 0.13, fur)
    s.poly([(0.66, 0.42), (0.76, 0.45), (0.87, 0.2), (0.79, 0.14)], fur)
    s.ellipse(0.86, 0.17, 0.07, 0.045, fur, angle=20)
    s.poly([(0.88, 0.14), (0.99, 0.23), (0.9, 0.24)], fur)
    s.poly([(0.8, 0.14), (0.76, 0.03), (0.84, 0.11)], dark)
    if rng.random() < 0.5:  # antlers
        s.line((0.84, 0.12), (0.8, 0.0), dark, max(1, s.w // 60))
        s.line((0.82, 0.06), (0.9, 0.01), dark, max(1, s.w // 60))
    s.ellipse(0.22, 0.38, 0.03, 0.04, (220, 225, 230))
    s.ellipse(0.88, 0.16, 0.012, 0.012, eye)


def _boar(s: Sprite, fur: Colour, eye: Colour, rng: np.random.Generator) -> None:
    for x in (0.24, 0.33, 0.6, 0.69):
        s.rect(x, 0.7, x + 0.06, 1.0, fur)
    s.ellipse(0.47, 0.5, 0.36, 0.3, fur)
    s.poly([(0.7, 0.28), (0.93, 0.52), (1.0, 0.66), (0.93, 0.76), (0.7, 0.74)], fur)
    s.ellipse(0.97, 0.68, 0.03, 0.07, (110, 110, 130))
    s.poly([(0.72, 0.3), (0.76, 0.14), (0.8, 0.32)], fur)
    s.line((0.15, 0.28), (0.7, 0.22), scaled(fur, 0.6), max(1, s.h // 14))
    s.line((0.92, 0.72), (0.89, 0.6), (225, 230, 235), max(1, s.w // 70))
    s.line((0.12, 0.45), (0.04, 0.6), fur, max(1, s.w // 80))
    s.ellipse(0.84, 0.45, 0.015, 0.025, eye)


def _fox(s: Sprite, fur: Colour, eye: Colour, rng: np.random.Generator) -> None:
    for x in (0.32, 0.38, 0.56, 0.61):
        s.rect(x, 0.6, x + 0.03, 1.0, (30, 30, 35))
    s.ellipse(0.15, 0.55, 0.15, 0.09, fur, angle=15)
    s.ellipse(0.03, 0.6, 0.04, 0.05, (235, 235, 235))
    s.ellipse(0.46, 0.5, 0.22, 0.15, fur)
    s.poly([(0.62, 0.35), (0.8, 0.3), (0.95, 0.46), (0.72, 0.56)], fur)
    s.poly([(0.68, 0.34), (0.69, 0.12), (0.75, 0.32)], fur)
    s.poly([(0.74, 0.32), (0.78, 0.1), (0.81, 0.31)], fur)
    s.ellipse(0.66, 0.56, 0.06, 0.09, (230, 235, 240))
    s.ellipse(0.82, 0.38, 0.012, 0.02, eye)


def _bird(s: Sprite, fur: Colour, eye: Colour, rng: np.random.Generator) -> None:
    beak = (40, 150, 200)
    if s.w > 1.6 * s.h:  # in flight, wings spread
        s.poly([(0.42, 0.5), (0.18, 0.0), (0.05, 0.08), (0.36, 0.62)], fur)
        s.poly([(0.55, 0.5), (0.78, 0.05), (0.92, 0.12), (0.62, 0.62)], fur)
        s.ellipse(0.5, 0.58, 0.2, 0.13, fur)
        s.poly([(0.32, 0.55), (0.12, 0.68), (0.32, 0.68)], fur)
        s.ellipse(0.72, 0.52, 0.07, 0.12, fur)
        s.poly([(0.78, 0.48), (0.86, 0.55), (0.78, 0.58)], beak)
        return
    s.line((0.45, 0.7), (0.42, 1.0), (40, 60, 80), max(1, s.w // 40))
    s.line((0.55, 0.7), (0.58, 1.0), (40, 60, 80), max(1, s.w // 40))
    s.poly([(0.3, 0.55), (0.0, 0.72), (0.05, 0.82), (0.34, 0.7)], fur)
    s.ellipse(0.5, 0.55, 0.28, 0.2, fur, angle=-15)
    s.ellipse(0.76, 0.3, 0.12, 0.16, fur)
    s.poly([(0.86, 0.25), (1.0, 0.32), (0.86, 0.37)], beak)
    s.ellipse(0.8, 0.27, 0.02, 0.03, eye)


DRAW = {"deer": _deer, "boar": _boar, "fox": _fox, "bird": _bird}
FUR: dict[str, list[Colour]] = {
    "deer": [(70, 110, 160), (60, 95, 140)],
    "boar": [(45, 50, 60), (60, 70, 80)],
    "fox": [(40, 110, 220), (50, 90, 190)],
    "bird": [(30, 30, 30), (60, 85, 115), (120, 120, 125)],
}


def _animal(rng: np.random.Generator, name: str, width: int, height: int, night: bool) -> Sprite:
    """A textured animal sprite, facing right or left."""
    frac, aspect = SIZE[name]
    flying = name == "bird" and rng.random() < 0.4
    aspect = 2.1 if flying else aspect
    h = max(6, round(height * frac * rng.uniform(0.8, 1.2)))
    sprite = Sprite(round(h * aspect), h)
    fur = jitter_colour(rng, FUR[name][int(rng.integers(len(FUR[name])))], 15)
    eye = (255, 255, 255) if night else (10, 10, 10)
    DRAW[name](sprite, fur, eye, rng)
    texture = 0.8 + 0.4 * smooth_noise(rng, sprite.w, sprite.h, 8)
    sprite.image = np.clip(sprite.image * texture[..., None], 0, 255).astype(np.uint8)
    return sprite.flipped() if rng.random() < 0.5 else sprite


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Ground texture, optional sky and tree line, a trail, and trunks behind the animals."""
    noise = fractal_noise(rng, w, h, octaves=6)[..., None]
    c1 = np.array(jitter_colour(rng, (40, 80, 50), 20), np.float32)
    c2 = np.array(jitter_colour(rng, (70, 120, 130), 25), np.float32)
    grain = rng.random((h, w, 1), dtype=np.float32) * GRAIN  # leaf litter, pebbles
    image = c1 * (1 - noise) + c2 * noise + grain - GRAIN / 2
    if rng.random() < 0.6:  # the trail itself: a lighter band widening towards the camera
        top_x, bottom_x = rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.8) * w
        pts = np.array(
            [
                [top_x - 0.03 * w, 0.35 * h],
                [top_x + 0.03 * w, 0.35 * h],
                [bottom_x + 0.3 * w, h],
                [bottom_x - 0.3 * w, h],
            ],
            np.int32,
        )
        path = np.zeros((h, w), np.uint8)
        cv2.fillPoly(path, [pts], 255)
        path_f = cv2.GaussianBlur(path, (0, 0), 3).astype(np.float32)[..., None] / 255.0
        image = image * (1 - 0.5 * path_f) + np.array((120, 150, 170), np.float32) * 0.5 * path_f
    if rng.random() < 0.5:
        horizon = round(h * rng.uniform(0.15, 0.35))
        sky = np.linspace(1.0, 0.8, horizon, dtype=np.float32)[:, None, None]
        image[:horizon] = np.array(jitter_colour(rng, (230, 200, 160), 20), np.float32) * sky
        tree_line = (horizon + 10 * (smooth_noise(rng, w, 1, 12)[0] - 0.5)).astype(np.int32)
        for x in range(w):
            image[max(0, tree_line[x] - 12) : horizon + 4, x] = (35, 60, 40)
    for _ in range(int(rng.integers(0, 5))):
        x, tw = int(rng.integers(0, w)), max(2, round(w * rng.uniform(0.01, 0.05)))
        bottom = round(h * rng.uniform(0.45, 0.85))
        cv2.rectangle(image, (x, 0), (x + tw, bottom), jitter_colour(rng, (40, 55, 70), 15), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def _foreground(rng: np.random.Generator, canvas: Canvas, night: bool) -> None:
    """Grass blades, a trunk and the camera's info bar: drawn over animals, owning nothing."""
    w, h = canvas.size
    mask = np.zeros((h, w), np.uint8)
    colour = jitter_colour(rng, (50, 120, 70), 25)
    for _ in range(int(rng.integers(40, 140))):
        x, y = int(rng.integers(0, w)), int(rng.integers(round(0.75 * h), h))
        tip = (x + int(rng.integers(-8, 9)), y - int(rng.integers(4, max(5, h // 8))))
        cv2.line(canvas.image, (x, y), tip, jitter_colour(rng, colour, 30), 1)
        cv2.line(mask, (x, y), tip, 255, 1)
    if rng.random() < 0.25:
        x, tw = int(rng.integers(0, w)), max(3, round(w * rng.uniform(0.04, 0.1)))
        cv2.rectangle(canvas.image, (x, 0), (x + tw, h), jitter_colour(rng, (30, 45, 60), 10), -1)
        cv2.rectangle(mask, (x, 0), (x + tw, h), 255, -1)
    if rng.random() < INFO_BAR_P:
        bar = max(8, round(h * 0.06))
        canvas.image[h - bar :] = 0
        mask[h - bar :] = 255
        text = f"{int(rng.integers(-5, 30))}C  CAM{int(rng.integers(1, 9))}"
        cv2.putText(
            canvas.image,
            text,
            (4, h - bar // 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            bar / 30,
            (230, 230, 230),
            1,
        )
    canvas.occlude(mask)


def _night(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Infrared look: grey, vegetation bright, strong vignette from the IR flash, grainy."""
    h, w = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    grey = 255.0 * (grey / 255.0) ** rng.uniform(0.5, 0.8)  # IR lifts foliage and fur
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    grey = grey * (1.15 - rng.uniform(0.3, 0.5) * r2) + rng.standard_normal((h, w), np.float32) * 7
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def render(
    rng: np.random.Generator, width: int, height: int, min_visible: float
) -> tuple[np.ndarray, list[RawBox]]:
    """One trail-camera image (BGR uint8) and its (label, xyxy, visible fraction) boxes."""
    night = rng.random() < NIGHT_P
    canvas = Canvas(_background(rng, width, height))
    animals = []
    count = 0 if rng.random() < EMPTY_SCENE_P else int(rng.integers(1, MAX_ANIMALS + 1))
    for _ in range(count):
        depth = rng.uniform(0.45, 1.12)  # feet height as a fraction of the image height
        animals.append((depth, CLASSES[int(rng.integers(len(CLASSES)))]))
    for depth, name in sorted(animals):  # far first, so near animals occlude far ones
        sprite = _animal(rng, name, width, round(height * (0.35 + 0.75 * depth)), night)
        x = round(rng.uniform(-0.4 * sprite.w, width - 0.6 * sprite.w))
        y = round(depth * height) - sprite.h
        if name == "bird" and sprite.w > 1.6 * sprite.h:
            y = round(rng.uniform(0.0, 0.5) * height)
        blur = int(rng.integers(5, 14)) if rng.random() < MOTION_BLUR_P else 0
        canvas.paste(sprite, x, y, name, blur_px=blur)
    _foreground(rng, canvas, night)
    canvas.image = _night(rng, canvas.image) if night else lighting(rng, canvas.image, 0.3)
    return canvas.image, canvas.boxes(min_visible)
