"""Retail shelf scenes: rows of cans, bottles, boxes and bags on shelf boards.

Each class has its own silhouette (a can is a short flat-topped cylinder, a bottle has a neck
and a cap, a box is a printed rectangle with a top face, a bag has crimped edges), with brand
colours drawn per facing so colour alone does not give the class away. Products of one brand
stand in runs, as they do in a store; some slots are empty, some products stand in front of
others, price tags and an occasional hand hide parts of them.
"""

from __future__ import annotations

import cv2
import numpy as np

from trainer.synth.canvas import (
    Canvas,
    RawBox,
    Sprite,
    jitter_colour,
    lighting,
    mild_perspective,
    scaled,
)

CLASSES = ["can", "bottle", "box", "bag"]
#: Product height as a fraction of the free height of a shelf row, (low, high) per class.
HEIGHT_FRAC = {"can": (0.42, 0.55), "bottle": (0.7, 0.9), "box": (0.6, 0.85), "bag": (0.5, 0.72)}
#: Width over height per class, (low, high).
ASPECT = {"can": (0.52, 0.66), "bottle": (0.28, 0.36), "box": (0.62, 0.9), "bag": (0.72, 0.95)}
#: Brand colours (BGR), shared by all classes so colour is not the class.
BRANDS: list[tuple[int, int, int]] = [
    (40, 40, 200),
    (170, 80, 20),
    (40, 150, 40),
    (30, 30, 30),
    (20, 140, 230),
    (150, 40, 140),
    (200, 200, 200),
    (30, 200, 220),
]
WORDS = ["COLA", "FIZZ", "OAT", "MAX", "PURE", "ZEST", "NOVA", "SUN"]
EMPTY_SLOT_P = 0.12  # chance a facing is an empty slot
FRONT_PRODUCT_P = 0.25  # chance per row of a product standing in front, overlapping others
HAND_P = 0.2  # chance per image of a hand reaching into the shelf
PERSPECTIVE = 0.06  # corner jitter, fraction of the image side


def _can(rng: np.random.Generator, w: int, h: int, brand: tuple[int, int, int]) -> Sprite:
    s = Sprite(w, h)
    metal = jitter_colour(rng, (190, 190, 195), 20)
    s.rect(0.0, 0.06, 1.0, 0.94, brand)
    s.ellipse(0.5, 0.94, 0.5, 0.06, jitter_colour(rng, (120, 120, 125), 10))
    s.ellipse(0.5, 0.06, 0.5, 0.06, metal)
    s.ellipse(0.5, 0.06, 0.36, 0.035, jitter_colour(rng, (150, 150, 155), 10))
    s.paint(0.0, 0.1, 1.0, 0.16, metal)
    s.paint(0.0, 0.84, 1.0, 0.9, metal)
    s.paint(0.0, 0.4, 1.0, 0.6, (245, 245, 245))
    s.text(str(rng.choice(WORDS))[:4], 0.08, 0.56, 0.12, brand)
    s.shade(rng, 0.5)
    return s


def _bottle(rng: np.random.Generator, w: int, h: int, brand: tuple[int, int, int]) -> Sprite:
    s = Sprite(w, h)
    glass = jitter_colour(
        rng, [(90, 160, 60), (60, 100, 140), (200, 170, 120)][rng.integers(3)], 25
    )
    s.rect(0.0, 0.38, 1.0, 1.0, glass)
    s.ellipse(0.5, 0.38, 0.5, 0.12, glass)
    s.rect(0.32, 0.08, 0.68, 0.32, glass)
    s.rect(0.28, 0.0, 0.72, 0.09, brand)
    s.paint(0.0, 0.55, 1.0, 0.8, brand)
    s.paint(0.1, 0.62, 0.9, 0.72, (240, 240, 240))
    s.shade(rng, 0.7)
    return s


def _box(rng: np.random.Generator, w: int, h: int, brand: tuple[int, int, int]) -> Sprite:
    s = Sprite(w, h)
    s.poly([(0.0, 0.08), (0.14, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)], brand)
    top = scaled(brand, 0.6)
    s.poly([(0.0, 0.08), (0.14, 0.0), (1.0, 0.0), (0.86, 0.08)], top)
    s.paint(0.1, 0.2, 0.9, 0.45, (245, 245, 245))
    s.text(str(rng.choice(WORDS)), 0.14, 0.39, 0.12, brand)
    s.ellipse(0.5, 0.7, 0.25, 0.13, jitter_colour(rng, (60, 200, 240), 40))
    return s


def _bag(rng: np.random.Generator, w: int, h: int, brand: tuple[int, int, int]) -> Sprite:
    s = Sprite(w, h)
    teeth = 7
    top = [(0.06 + 0.88 * i / teeth, 0.06 if i % 2 else 0.0) for i in range(teeth + 1)]
    bottom = [(0.94 - 0.88 * i / teeth, 0.94 if i % 2 else 1.0) for i in range(teeth + 1)]
    sides = [(1.0, 0.5), *bottom, (0.0, 0.5)]  # the pillow bulges between crimped seals
    s.poly(top + sides, brand)
    s.paint(0.0, 0.0, 1.0, 0.1, scaled(brand, 0.7))
    s.ellipse(0.5, 0.55, 0.3, 0.2, (230, 240, 250))
    s.text(str(rng.choice(WORDS))[:4], 0.26, 0.6, 0.1, brand)
    s.shade(rng, 0.8)
    return s


DRAW = {"can": _can, "bottle": _bottle, "box": _box, "bag": _bag}


def _hand(rng: np.random.Generator, w: int, h: int) -> Sprite:
    s = Sprite(w, h)
    skin = jitter_colour(rng, [(140, 170, 220), (90, 120, 170), (60, 80, 120)][rng.integers(3)], 15)
    s.poly(
        [(0.0, 0.35), (0.6, 0.25), (0.6, 0.75), (0.0, 0.65)], jitter_colour(rng, (80, 60, 40), 40)
    )
    s.ellipse(0.72, 0.5, 0.2, 0.3, skin)
    for i in range(4):
        s.ellipse(0.92, 0.3 + 0.13 * i, 0.08, 0.05, skin)
    return s


def _product(rng: np.random.Generator, name: str, row_h: float) -> tuple[int, int]:
    height = row_h * rng.uniform(*HEIGHT_FRAC[name])
    return max(6, round(height * rng.uniform(*ASPECT[name]))), max(8, round(height))


def render(
    rng: np.random.Generator, width: int, height: int, min_visible: float
) -> tuple[np.ndarray, list[RawBox]]:
    """One shelf image (BGR uint8) and its (label, xyxy, visible fraction) boxes."""
    wall_colour = jitter_colour(rng, (200, 205, 210), 40)
    wall = np.array(wall_colour, np.float32)
    shade = np.linspace(0.75, 1.05, height, dtype=np.float32)[:, None, None]
    canvas = Canvas(
        np.clip(wall * shade * np.ones((1, width, 1), np.float32), 0, 255).astype(np.uint8)
    )
    rows = int(rng.integers(2, 4))
    board_px = max(3, round(height * rng.uniform(0.025, 0.04)))
    board_colour = jitter_colour(rng, (70, 90, 110), 40)
    top = round(height * rng.uniform(-0.05, 0.05))
    row_h = (height - top) / rows
    tags = np.zeros((height, width), np.uint8)
    for r in range(rows):
        floor = round(top + (r + 1) * row_h) - board_px
        ceiling = round(top + r * row_h)
        back = scaled(wall_colour, 0.55)
        cv2.rectangle(canvas.image, (0, max(0, ceiling)), (width, floor), back, -1)
        free = floor - ceiling - 2
        x = round(rng.uniform(-0.25, 0.05) * row_h)
        while x < width:
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            brand = BRANDS[int(rng.integers(len(BRANDS)))]
            run = int(rng.integers(1, 5))
            for _ in range(run):
                w, h = _product(rng, name, free)
                if rng.random() >= EMPTY_SLOT_P:
                    canvas.paste(DRAW[name](rng, w, h, brand), x, floor - h, name)
                x += w + round(w * rng.uniform(0.02, 0.15))
        if rng.random() < FRONT_PRODUCT_P:
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            w, h = _product(rng, name, free)
            fx = int(rng.integers(0, max(1, width - w)))
            sprite = DRAW[name](rng, w, h, BRANDS[int(rng.integers(len(BRANDS)))])
            canvas.paste(sprite, fx, floor - h + board_px // 2, name)
        cv2.rectangle(canvas.image, (0, floor), (width, floor + board_px), board_colour, -1)
        canvas.ids[max(0, floor) : floor + board_px] = 0
        for _ in range(int(rng.integers(1, 4))):
            tx, tw = int(rng.integers(0, width)), max(6, round(width * 0.06))
            ty = floor - max(2, board_px // 2)
            cv2.rectangle(tags, (tx, ty), (tx + tw, floor + board_px), 255, -1)
    canvas.image[tags > 0] = (235, 240, 240)
    canvas.occlude(tags)
    if rng.random() < HAND_P:
        hw, hh = round(width * rng.uniform(0.3, 0.5)), round(height * rng.uniform(0.12, 0.2))
        hand = _hand(rng, hw, hh)
        hand = hand.flipped() if rng.random() < 0.5 else hand
        hx = -hw // 3 if hand.mask[:, 0].any() else width - 2 * hw // 3  # arm off-frame
        canvas.paste(hand, hx, int(rng.integers(0, height - hh)), None)
    canvas.warp(mild_perspective(rng, width, height, PERSPECTIVE))
    canvas.image = lighting(rng, canvas.image, spread=0.35)
    return canvas.image, canvas.boxes(min_visible)
