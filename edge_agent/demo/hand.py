"""The hand of the demo's shelf clip: where it grips an item, the band its arm covers, and how
it is drawn (a sleeve from the frame edge, a palm, four fingers and a thumb). Apart from
clip.py, which moves it, so each module keeps one job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge_agent.demo.clip import ShelfAssets, TakenItem

#: Hand and arm size as fractions of the scene height (a 512 px scene: a 46 px sleeve).
SLEEVE_FRAC = 0.09
PALM_RX_FRAC, PALM_RY_FRAC = 0.045, 0.055
FINGER_RX_FRAC, FINGER_RY_FRAC = 0.03, 0.012
#: Where the hand grips an item: this fraction of its size along the arm in from its near side.
GRIP_INSET = 0.3
#: Colours (BGR), in the range trainer.synth uses for its own hands.
SKIN = (135, 165, 215)
SKIN_EDGE = (100, 125, 170)
SLEEVE = (90, 62, 40)

Side = Literal["left", "right", "top", "bottom"]

#: Unit vector along the arm, pointing into the frame, for each side the arm comes from.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (1, 0),
    "right": (-1, 0),
    "top": (0, 1),
    "bottom": (0, -1),
}


def grip_point(item: TakenItem) -> tuple[int, int]:
    """Where the hand holds the item: on its middle line, a little in from its side facing the
    arm."""
    x1, y1, x2, y2 = item.region
    dx, dy = DIRECTIONS[item.side]
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    if dx:
        inset = round(GRIP_INSET * (x2 - x1))
        return (x1 + inset if dx > 0 else x2 - inset), cy
    inset = round(GRIP_INSET * (y2 - y1))
    return cx, (y1 + inset if dy > 0 else y2 - inset)


def outside(assets: ShelfAssets, item: TakenItem) -> tuple[int, int]:
    """Where the hand starts and ends: just outside the frame, in line with the grip."""
    w, h = assets.size
    gx, gy = grip_point(item)
    dx, dy = DIRECTIONS[item.side]
    off = round(2 * max(PALM_RX_FRAC, PALM_RY_FRAC) * h)
    if dx:
        return (-off if dx > 0 else w + off), gy
    return gx, (-off if dy > 0 else h + off)


def arm_band(assets: ShelfAssets, item: TakenItem) -> tuple[int, int, int, int]:
    """The xyxy region the arm and hand cover at full reach (tools/build_demo_assets.py picks
    items whose arm hides no other item)."""
    w, h = assets.size
    gx, gy = grip_point(item)
    dx, dy = DIRECTIONS[item.side]
    half = round(max(SLEEVE_FRAC * 0.6, PALM_RY_FRAC) * h) + 2
    tip = round((PALM_RX_FRAC + 2 * FINGER_RX_FRAC) * h)
    if dx > 0:
        return 0, gy - half, gx + tip, gy + half
    if dx < 0:
        return gx - tip, gy - half, w, gy + half
    if dy > 0:
        return gx - half, 0, gx + half, gy + tip
    return gx - half, gy - tip, gx + half, h


def hand_at(assets: ShelfAssets, item: TakenItem, reach: float) -> tuple[int, int]:
    """The grip's position for a reach in [0, 1]: 0 is just outside the frame, 1 on the item."""
    (gx, gy), (ox, oy) = grip_point(item), outside(assets, item)
    return round(ox + (gx - ox) * reach), round(oy + (gy - oy) * reach)


def draw_hand(image: np.ndarray, x: int, y: int, side: Side) -> None:
    """A sleeve from the frame edge, a palm at (x, y) and four fingers pointing into the shelf."""
    h, w = image.shape[:2]
    d = np.array(DIRECTIONS[side], np.float64)
    across = np.array([-d[1], d[0]])
    here = np.array([x, y], np.float64)
    angle = float(np.degrees(np.arctan2(d[1], d[0])))
    palm = (round(PALM_RX_FRAC * h), round(PALM_RY_FRAC * h))
    finger = (round(FINGER_RX_FRAC * h), round(FINGER_RY_FRAC * h))
    sleeve = SLEEVE_FRAC * h
    edge = here - d * (np.hypot(w, h))  # far outside the frame; fillPoly clips
    wrist = here - d * palm[0]
    corners = [
        edge - 0.6 * sleeve * across,
        wrist - 0.45 * sleeve * across,
        wrist + 0.45 * sleeve * across,
        edge + 0.6 * sleeve * across,
    ]
    cv2.fillPoly(image, [np.round(corners).astype(np.int32)], SLEEVE, cv2.LINE_AA)

    def blob(centre: np.ndarray, axes: tuple[int, int], tilt: float, edge_colour: bool) -> None:
        c = (round(centre[0]), round(centre[1]))
        cv2.ellipse(image, c, axes, angle + tilt, 0, 360, SKIN, -1, cv2.LINE_AA)
        if edge_colour:
            cv2.ellipse(image, c, axes, angle + tilt, 0, 360, SKIN_EDGE, 1, cv2.LINE_AA)

    for k in range(4):  # fingers first, so the palm's edge overlaps their roots
        blob(here + d * 0.8 * palm[0] + across * (k - 1.5) * 2.1 * finger[1], finger, 0, True)
    blob(here + d * 0.3 * palm[0] - across * 0.9 * palm[1], finger, -35, False)  # thumb
    blob(here, palm, 0, True)
