"""Writes the demo's shelf assets (edge_agent/demo/assets/) from one trainer.synth shelf scene.

    python -m tools.build_demo_assets            # the committed assets: scene 17, seed 0, 512x512
    python -m tools.build_demo_assets --index 7 --size 640 --out /tmp/assets

A developer tool: it imports trainer.synth, so the agent does not have to. It renders the scene,
renders it again with products not pasted (the same random draws in the same order, so walls,
boards, price tags, perspective and lighting are identical; checked below), picks the items the
demo's hand takes and writes:

- ``shelf.jpg``: the scene; ``shelf_empty.jpg``: the same shelf with no products;
- ``shelf_taken.png``: per pixel 0, or k + 1 where taken item k is;
- ``shelf.json``: every labelled box, the taken items and how the assets were made.

The scene is square because the shelf detector is trained on square synth scenes stretched to
its input size; another aspect would squash the products it sees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import cv2
import numpy as np

from edge_agent.demo import clip
from trainer.synth import render
from trainer.synth.canvas import Canvas

KIND = "shelf"
DEFAULT_SEED = 0
DEFAULT_INDEX = 17  # 3 rows, 19 items of all four classes, 3 reachable without hiding others
DEFAULT_SIZE_PX = 512
TAKEN_ITEMS = 3
JPEG_QUALITY = 88  # the three files stay under ~130 KB at 512 px
#: An item the hand takes must be this much in view (visible pixels / sprite pixels).
MIN_VISIBLE = 0.95
#: Pixels around a box the mask may spread into (the perspective warp interpolates a product's
#: edge into its surroundings); the box grown by this must stay inside the frame.
MARGIN_PX = 3
#: A box the arm covers more than this fraction of is "hidden by the arm".
ARM_HIDES = 0.05
#: Each mask is widened by clip.RING_PX, so the scene JPEG's ringing round a product goes with
#: it; clip.py erodes it by as much for the item the hand carries.


def render_pair(index: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray, list, list]:
    """(scene, empty shelf, boxes, visible fractions); refuses scenes with a hand in them."""
    original = Canvas.paste
    occluders: list[Any] = []

    def spy(self: Canvas, sprite: Any, x: int, y: int, label: str | None, blur_px: int = 0):
        if label is None:
            occluders.append((x, y))
        original(self, sprite, x, y, label, blur_px)

    with mock.patch.object(Canvas, "paste", spy):
        scene, boxes, visible = render(KIND, index, seed, (size, size))
    if occluders:
        raise SystemExit(f"scene {index} (seed {seed}) has a hand in it; pick another --index")
    # Products not pasted: Canvas.paste draws no random numbers, so every later draw is the same.
    with mock.patch.object(Canvas, "paste", lambda *args, **kwargs: None):
        empty, _, _ = render(KIND, index, seed, (size, size))
    return scene, empty, boxes, visible


def _grow(xyxy: tuple[float, ...], px: int, size: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(v) for v in xyxy)
    return max(0, x1 - px), max(0, y1 - px), min(size, x2 + px), min(size, y2 + px)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _area(xyxy: tuple[float, ...]) -> float:
    return (xyxy[2] - xyxy[0]) * (xyxy[3] - xyxy[1])


def check_identical_outside(scene: np.ndarray, empty: np.ndarray, boxes: list) -> None:
    """The empty render must differ from the scene only at products, or it is not the same shelf."""
    size = scene.shape[0]
    diff = (np.abs(scene.astype(np.int16) - empty).max(axis=2) > 0).astype(np.uint8)
    for box in boxes:
        x1, y1, x2, y2 = _grow(box.xyxy, MARGIN_PX, size)
        diff[y1:y2, x1:x2] = 0
    # What is left are products too hidden to be labelled; a shifted render would differ broadly.
    if diff.mean() > 0.05:
        raise SystemExit(
            f"the empty shelf differs from the scene at {diff.mean():.1%} of pixels outside the "
            "boxes: trainer.synth draws random numbers in Canvas.paste now; update this tool"
        )


def item_mask(
    scene: np.ndarray, empty: np.ndarray, xyxy: tuple[float, ...], others: list[tuple[float, ...]]
) -> np.ndarray:
    """Bool mask (scene size) of the pixels the product in ``xyxy`` changed, holes filled, and
    none inside the ``others`` boxes (its neighbours may stand closer than the margin)."""
    size = scene.shape[0]
    x1, y1, x2, y2 = _grow(xyxy, MARGIN_PX, size)
    changed = (np.abs(scene.astype(np.int16) - empty).max(axis=2) > 0).astype(np.uint8)
    local = np.zeros_like(changed)
    local[y1:y2, x1:x2] = changed[y1:y2, x1:x2]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    local = cv2.morphologyEx(local, cv2.MORPH_CLOSE, kernel)
    local = cv2.dilate(local, np.ones((2 * clip.RING_PX + 1,) * 2, np.uint8))
    out = np.zeros_like(local)
    out[y1:y2, x1:x2] = local[y1:y2, x1:x2]
    for other in others:
        ox1, oy1, ox2, oy2 = (round(v) for v in other)
        out[oy1:oy2, ox1:ox2] = 0
    return out.astype(bool)


def pick_taken(
    scene: np.ndarray, empty: np.ndarray, boxes: list, visible: list[float]
) -> list[tuple[int, clip.Side, np.ndarray]]:
    """Items the hand can take cleanly: in full view, touching no other box, and reachable from
    a frame edge with an arm that hides no other item. Distinct labels, shortest reach first."""
    size = scene.shape[0]
    probe = clip.ShelfAssets(
        scene, empty, [b.label for b in boxes], np.array([b.xyxy for b in boxes], np.float32), []
    )
    ranked = []
    for i, box in enumerate(boxes):
        grown = _grow(box.xyxy, MARGIN_PX, size)
        inside = grown[0] > 0 and grown[1] > 0 and grown[2] < size and grown[3] < size
        others = [o.xyxy for j, o in enumerate(boxes) if j != i]
        if visible[i] < MIN_VISIBLE or not inside or any(_overlap(box.xyxy, o) for o in others):
            continue
        mask = item_mask(scene, empty, box.xyxy, others)
        ys, xs = np.nonzero(mask)
        region = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        for side in clip.DIRECTIONS:
            crop = mask[region[1] : region[3], region[0] : region[2]]
            item = clip.TakenItem(i, side, region, crop, crop)
            band = clip.arm_band(probe, item)
            hidden = sum(
                _overlap(band, o.xyxy) > ARM_HIDES * _area(o.xyxy)
                for j, o in enumerate(boxes)
                if j != i
            )
            gx, gy = clip.grip_point(item)
            reach = {"left": gx, "right": size - gx, "top": gy, "bottom": size - gy}[side]
            ranked.append((hidden, reach, i, side, mask))
    ranked.sort(key=lambda r: (r[0], r[1]))
    picked: list[tuple[int, clip.Side, np.ndarray]] = []
    for hidden, _, i, side, mask in ranked:
        if hidden == 0 and boxes[i].label not in {boxes[p[0]].label for p in picked}:
            picked.append((i, side, mask))
    return picked[:TAKEN_ITEMS]


def write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    path.write_bytes(data.tobytes())


def _dumps(meta: dict[str, Any]) -> str:
    """JSON with one box or item per line: readable in a diff, a few KB."""
    lines = ["{"]
    for n, (key, value) in enumerate(meta.items()):
        comma = "," if n < len(meta) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"  {json.dumps(v)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{comma}")
    return "\n".join([*lines, "}"]) + "\n"


def build(out: Path, index: int, seed: int, size: int) -> list[Path]:
    scene, empty, boxes, visible = render_pair(index, seed, size)
    check_identical_outside(scene, empty, boxes)
    taken = pick_taken(scene, empty, boxes, visible)
    if len(taken) < TAKEN_ITEMS:
        raise SystemExit(
            f"scene {index} (seed {seed}) has {len(taken)} item(s) a hand can take cleanly, "
            f"the demo needs {TAKEN_ITEMS} with distinct labels; pick another --index"
        )
    masks = np.zeros(scene.shape[:2], np.uint8)
    for k, (_, _, mask) in enumerate(taken):
        masks[mask] = k + 1
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "shelf.jpg", out / "shelf_empty.jpg", out / "shelf_taken.png"]
    write_jpeg(files[0], scene)
    write_jpeg(files[1], empty)
    cv2.imwrite(str(files[2]), masks, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    meta = {
        "schema": clip.ASSETS_SCHEMA,
        "made_by": f"python -m tools.build_demo_assets --index {index} --seed {seed} --size {size}",
        "source": {"kind": KIND, "index": index, "seed": seed, "size": [size, size]},
        "scene": files[0].name,
        "empty": files[1].name,
        "masks": files[2].name,
        "boxes": [{"label": b.label, "xyxy": [round(v, 1) for v in b.xyxy]} for b in boxes],
        "taken": [{"box": i, "side": side} for i, side, _ in taken],
    }
    json_path = out / clip.ASSETS_JSON
    json_path.write_text(_dumps(meta), encoding="utf-8")
    return [*files, json_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=clip.ASSETS, help="assets folder")
    parser.add_argument("--index", type=int, default=DEFAULT_INDEX, help="synth scene index")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="synth seed")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE_PX, help="square side, pixels")
    args = parser.parse_args(argv)
    files = build(args.out, args.index, args.seed, args.size)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"wrote {f} ({f.stat().st_size / 1024:.0f} KB)")
    print(f"total {total / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
