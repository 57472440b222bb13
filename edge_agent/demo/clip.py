"""The demo's shelf clip: a hand takes three items off a shelf and later puts them back; then one
bag slides along its shelf by itself, across a counting line, and back.

Composed with OpenCV from small committed assets (``assets/``, written by
``python -m tools.build_demo_assets`` from one ``trainer.synth`` shelf scene), so making the clip
needs neither the trainer nor torch. The assets hold the scene, the same scene rendered with no
products (same random draws, so walls, boards, price tags, warp and lighting match pixel for
pixel), a mask of each item the hand takes, and every labelled box. An item taken off the shelf
is replaced by the empty shelf under its mask; an item in the hand is the scene's pixels under
its mask, moved. The sliding bag has no mask in the assets: its pixels are those where the scene
differs from the empty shelf inside its box (:func:`slide_item`). Nothing hides it while it
moves, so a detector sees it in every frame, a tracker keeps its id and a line across its path
(:data:`LINE`) is crossed once each way (:data:`CROSSINGS`). Everything is a function of the
frame number, so the clip is the same on every machine and :func:`expected_counts` is the ground
truth for each frame.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_agent.demo.hand import DIRECTIONS, Side, arm_band, draw_hand, grip_point, hand_at

__all__ = ["DIRECTIONS", "Side", "arm_band", "grip_point"]  # the asset tool uses them from here

ASSETS = Path(__file__).parent / "assets"
#: The assets' index file; it names the images beside it.
ASSETS_JSON = "shelf.json"
ASSETS_SCHEMA = "edgesight.demo-shelf/1"

#: The masks reach this far past each item (tools/build_demo_assets.py widens them), so the
#: JPEG's ringing round it goes when it is taken; the hand carries the item without it.
RING_PX = 2

CLIP_FPS = 12
#: Part of the clip's file name (edge_agent.demo's clip_name): bump it when the drawing changes.
CLIP_VERSION = 2
#: The hand's part takes frames 0 to 119 (10 s), the slide the rest.
CLIP_FRAMES = 174  # 14.5 s
#: Frames the hand takes to reach an item from the frame edge; pulling back takes as many.
REACH_FRAMES = 5
#: (item, frame the hand starts reaching to take it, frame it starts reaching to put it back);
#: ``item`` numbers the assets' ``taken`` list. No two moves overlap, and every gap between
#: moves leaves at least 6 frames with no hand in view, where counts are exact.
SCHEDULE: tuple[tuple[int, int, int], ...] = ((0, 12, 72), (1, 30, 88), (2, 48, 104))

#: The bag that slides after the hand's part: its index in the assets' boxes (the "MAX" bag,
#: second from the left on the top shelf; the gap to its right is the only one wide enough to
#: slide in without passing over another product) and its label.
SLIDE_BOX = 1
SLIDE_LABEL = "bag"
#: How far it slides to the right, as a fraction of the frame width (80 px of 512: into the
#: gap, stopping 11 px short of the can; its box goes from x 0.141-0.283 to 0.297-0.439).
SLIDE_DX = 0.156
#: (frame it starts sliding out, frame it starts sliding back). Each way takes SLIDE_FRAMES
#: (eased: at most 10 px, a seventh of its width, per frame); it pauses 1 s at the far end.
SLIDE = (126, 150)
SLIDE_FRAMES = 12
#: The vertical counting line, as a fraction of the frame width: the bag's centre goes from
#: x 0.212 to 0.368 and back. No other product's centre is within 28 px (0.055) of it, and none
#: moves sideways.
LINE_X = 0.3
#: The line as a segment ((x, y), (x, y)) in fractions of the frame, across the top shelf only
#: (its board is at y 0.27, the bag's centre at 0.17): products below never reach it.
LINE: tuple[tuple[float, float], tuple[float, float]] = ((LINE_X, 0.0), (LINE_X, 0.3))
#: (first frame with the bag's centre past LINE_X, the way it moved): out, then back.
CROSSINGS: tuple[tuple[int, Literal["right", "left"]], ...] = ((132, "right"), (155, "left"))
#: A pixel belongs to a product where scene and empty shelf differ by more than this (0-255,
#: per channel): the two JPEGs differ by at most 14 on bare shelf, and by 72 or more on 99% of
#: the sliding bag.
CHANGED_MIN = 32
#: The box grown by this (px) bounds the sliding bag's pixels (tools/build_demo_assets.py's
#: MARGIN_PX: the perspective warp spreads a product's edge this far).
MARGIN_PX = 3


@dataclass(frozen=True)
class TakenItem:
    """One item the hand moves: its box and label, the arm's side, its mask's bounding region."""

    box: int  # index into ShelfAssets.labels / boxes
    side: Side
    region: tuple[int, int, int, int]  # x1, y1, x2, y2 of the mask
    mask: np.ndarray  # bool, the region's size: the item and a thin ring of shelf round it
    core: np.ndarray  # the mask without that ring: what the hand carries


@dataclass(frozen=True)
class SlidingItem:
    """The product that slides: its box, its pixels' bounding region and masks as TakenItem's."""

    box: int
    region: tuple[int, int, int, int]
    mask: np.ndarray  # what leaves its place: the product and a thin ring round it
    core: np.ndarray  # what moves: the product


@dataclass(frozen=True)
class ShelfAssets:
    scene: np.ndarray  # BGR uint8, H x W x 3
    empty: np.ndarray  # the same shelf with no products
    labels: list[str]  # one per labelled box in the scene
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    taken: list[TakenItem]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.scene.shape[1]), int(self.scene.shape[0])


def _read_image(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FileNotFoundError(
            f"{path}: demo asset missing or unreadable (rebuild: python -m tools.build_demo_assets)"
        )
    return image


def load_assets(folder: Path = ASSETS) -> ShelfAssets:
    """Read the committed scene, empty shelf, masks and boxes."""
    meta = json.loads((folder / ASSETS_JSON).read_text(encoding="utf-8"))
    if meta.get("schema") != ASSETS_SCHEMA:
        raise ValueError(
            f"{folder / ASSETS_JSON}: schema must be {ASSETS_SCHEMA!r}, got {meta.get('schema')!r}"
        )
    scene = _read_image(folder / meta["scene"], cv2.IMREAD_COLOR)
    empty = _read_image(folder / meta["empty"], cv2.IMREAD_COLOR)
    masks = _read_image(folder / meta["masks"], cv2.IMREAD_GRAYSCALE)
    if not scene.shape == empty.shape or scene.shape[:2] != masks.shape:
        raise ValueError(
            f"{folder}: scene, empty shelf and masks must have one size, but got "
            f"{scene.shape}, {empty.shape}, {masks.shape}"
        )
    taken = []
    for k, item in enumerate(meta["taken"]):
        if item["side"] not in DIRECTIONS:
            raise ValueError(
                f"{folder / ASSETS_JSON}: taken[{k}].side must be one of {sorted(DIRECTIONS)}, "
                f"but got {item['side']!r}"
            )
        ys, xs = np.nonzero(masks == k + 1)
        if len(xs) == 0:
            raise ValueError(f"{folder / meta['masks']}: no pixel has value {k + 1} (item {k})")
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        mask = masks[y1:y2, x1:x2] == k + 1
        core = cv2.erode(mask.astype(np.uint8), np.ones((2 * RING_PX + 1,) * 2, np.uint8)) > 0
        taken.append(TakenItem(item["box"], item["side"], (x1, y1, x2, y2), mask, core))
    return ShelfAssets(
        scene=scene,
        empty=empty,
        labels=[b["label"] for b in meta["boxes"]],
        boxes=np.array([b["xyxy"] for b in meta["boxes"]], np.float32).reshape(-1, 4),
        taken=taken,
    )


# -- the schedule ---------------------------------------------------------------------------------


def _moves(i: int) -> list[tuple[int, float, bool]]:
    """(item, hand reach 0..1, carrying) for the hand in frame ``i``; empty when none is in view.

    Reach 1 is the hand on the item; it rises frame by frame while reaching and falls while
    pulling back. A taking hand carries the item out; a returning hand carries it in.
    """
    out = []
    for item, take, back in SCHEDULE:
        for start, carry_in in ((take, False), (back, True)):
            j = i - start
            if 0 <= j < REACH_FRAMES:
                out.append((item, _ease((j + 1) / REACH_FRAMES), carry_in))
            elif REACH_FRAMES <= j < 2 * REACH_FRAMES:
                out.append((item, _ease(1 - (j - REACH_FRAMES + 1) / REACH_FRAMES), not carry_in))
    return out


def _ease(t: float) -> float:
    return t * t * (3 - 2 * t)  # smoothstep: the hand slows down near the shelf and the edge


def on_shelf(item: int, i: int) -> bool:
    """Whether taken item ``item`` stands on the shelf in frame ``i``."""
    for k, take, back in SCHEDULE:
        if k == item:
            return not take + REACH_FRAMES <= i < back + REACH_FRAMES
    return True


def hand_in_view(i: int) -> bool:
    return bool(_moves(i))


def expected_counts(assets: ShelfAssets, i: int) -> dict[str, int] | None:
    """Labelled items on the shelf in frame ``i``, per label; None while a hand is in view.

    The sliding bag stays on the shelf and in full view, so it changes no count."""
    if hand_in_view(i):
        return None
    counts = Counter(assets.labels)
    for k, item in enumerate(assets.taken):
        if not on_shelf(k, i):
            counts[assets.labels[item.box]] -= 1
    return dict(counts)


def _slide_t(i: int) -> float:
    """How far along its path the sliding bag is in frame ``i``: 0 at its place, 1 at the far
    end."""
    out, back = SLIDE
    if out <= i < out + SLIDE_FRAMES:
        return _ease((i - out + 1) / SLIDE_FRAMES)
    if out + SLIDE_FRAMES <= i < back:
        return 1.0
    if back <= i < back + SLIDE_FRAMES:
        return _ease(1 - (i - back + 1) / SLIDE_FRAMES)
    return 0.0


def slide_offset(assets: ShelfAssets, i: int) -> int:
    """Pixels the sliding bag stands to the right of its place in frame ``i``."""
    return round(SLIDE_DX * assets.size[0] * _slide_t(i))


def slide_box(assets: ShelfAssets, i: int) -> np.ndarray:
    """The sliding bag's labelled box in frame ``i``: (4,) float32 xyxy pixels."""
    box = assets.boxes[SLIDE_BOX].copy()
    box[[0, 2]] += slide_offset(assets, i)
    return box


def slide_item(assets: ShelfAssets) -> SlidingItem:
    """The sliding bag's pixels: where the scene differs from the empty shelf inside its box
    (grown by MARGIN_PX, other boxes left out), gaps closed and holes filled, as
    tools/build_demo_assets.py makes the taken items' masks."""
    if assets.labels[SLIDE_BOX : SLIDE_BOX + 1] != [SLIDE_LABEL]:
        raise ValueError(
            f"the sliding product must be box {SLIDE_BOX} labelled {SLIDE_LABEL!r}, but the "
            f"assets' box {SLIDE_BOX} is {assets.labels[SLIDE_BOX : SLIDE_BOX + 1]}"
        )
    w, h = assets.size
    bx1, by1, bx2, by2 = (round(float(v)) for v in assets.boxes[SLIDE_BOX])
    x1, y1 = max(0, bx1 - MARGIN_PX), max(0, by1 - MARGIN_PX)
    x2, y2 = min(w, bx2 + MARGIN_PX), min(h, by2 + MARGIN_PX)
    diff = np.abs(assets.scene[y1:y2, x1:x2].astype(np.int16) - assets.empty[y1:y2, x1:x2])
    changed = (diff.max(axis=2) > CHANGED_MIN).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, kernel)
    for k, other in enumerate(assets.boxes):
        if k != SLIDE_BOX:
            ox1, oy1, ox2, oy2 = (round(float(v)) for v in other)
            changed[max(0, oy1 - y1) : max(0, oy2 - y1), max(0, ox1 - x1) : max(0, ox2 - x1)] = 0
    outside = np.pad(1 - changed, 1, constant_values=1)  # a frame of background to flood from
    cv2.floodFill(outside, None, (0, 0), 2)
    core = outside[1:-1, 1:-1] != 2  # the product and its holes
    ring = cv2.dilate(core.astype(np.uint8), np.ones((2 * RING_PX + 1,) * 2, np.uint8)) > 0
    return SlidingItem(SLIDE_BOX, (x1, y1, x2, y2), ring, core)


# -- drawing --------------------------------------------------------------------------------------


def _paste(image: np.ndarray, source: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Copy ``source`` pixels under ``mask`` to (x, y) in ``image``, clipped to the frame."""
    h, w = image.shape[:2]
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(w, x + mask.shape[1]), min(h, y + mask.shape[0])
    if x1 >= x2 or y1 >= y2:
        return
    m = mask[y1 - y : y2 - y, x1 - x : x2 - x]
    image[y1:y2, x1:x2][m] = source[y1 - y : y2 - y, x1 - x : x2 - x][m]


def compose_frame(assets: ShelfAssets, i: int) -> np.ndarray:
    """Frame ``i`` of the clip (BGR uint8, the scene's size)."""
    frame = assets.scene.copy()
    dx = slide_offset(assets, i)
    if dx:
        slider = slide_item(assets)
        x1, y1, x2, y2 = slider.region
        frame[y1:y2, x1:x2][slider.mask] = assets.empty[y1:y2, x1:x2][slider.mask]
        _paste(frame, assets.scene[y1:y2, x1:x2], slider.core, x1 + dx, y1)
    for k, item in enumerate(assets.taken):
        if not on_shelf(k, i):
            x1, y1, x2, y2 = item.region
            frame[y1:y2, x1:x2][item.mask] = assets.empty[y1:y2, x1:x2][item.mask]
    for k, reach, carrying in _moves(i):
        item = assets.taken[k]
        gx, gy = grip_point(item)
        x, y = hand_at(assets, item, reach)
        if carrying:
            x1, y1, x2, y2 = item.region
            _paste(frame, assets.scene[y1:y2, x1:x2], item.core, x1 + x - gx, y1 + y - gy)
        draw_hand(frame, x, y, item.side)
    return frame


def write_clip(path: Path, assets: ShelfAssets | None = None) -> int:
    """Write the clip to ``path`` (mp4v) and return its frame count."""
    assets = assets or load_assets()
    w, h = assets.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), CLIP_FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
    try:
        for i in range(CLIP_FRAMES):
            writer.write(compose_frame(assets, i))
    finally:
        writer.release()
    return CLIP_FRAMES
