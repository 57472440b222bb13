"""Draw predictions on a copy of a frame: boxes with label, score and track id, counts, top
classes, and the zones and lines stages add as overlays (with their counts as captions).

Pure functions: the input image is never written to, and the same input gives the same pixels.
The demo writes its annotated frames with them; the ``snapshot`` stage draws event snapshots
with them. Sizes (text, line width) follow the shorter image side, so a 320 px snapshot and a
1080p frame both stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from edge_agent.types import UNCONFIRMED, Classifications, Detections, Overlay

BGR = tuple[int, int, int]

#: Colour per class id, cycling: Okabe-Ito (readable with colour-blind vision) then Tableau
#: tones, in BGR. Class 0 is orange, not red, so it does not read as an alarm.
PALETTE: tuple[BGR, ...] = (
    (0, 159, 230),  # orange
    (233, 180, 86),  # sky blue
    (115, 158, 0),  # bluish green
    (66, 228, 240),  # yellow
    (178, 114, 0),  # blue
    (0, 94, 213),  # vermillion
    (167, 121, 204),  # reddish purple
    (180, 119, 31),  # tableau blue
    (44, 160, 44),  # tableau green
    (189, 103, 148),  # tableau purple
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Text cap height as a fraction of the shorter image side, and the smallest font scale that
#: stays legible (HERSHEY_SIMPLEX at scale 1 is about 22 px tall).
TEXT_FRAC = 0.026
MIN_FONT_SCALE = 0.35
HERSHEY_PX_AT_SCALE_1 = 22
#: Box line width as a fraction of the shorter image side (at least 1 px).
LINE_FRAC = 0.004
#: Luma above which a background gets black text instead of white.
LIGHT_LUMA = 150
#: Opacity of the dark panel behind counts and classifications.
PANEL_ALPHA = 0.6
#: Classes listed by draw_classifications.
TOP_K = 3
#: Overlay colours (BGR), none of them a class colour: zones white, lines magenta. A black
#: halo this many pixels wider keeps them visible on a white shelf or a bright sky.
OVERLAY_COLOURS: dict[str, BGR] = {"zone": (255, 255, 255), "line": (255, 0, 255)}
HALO_PX = 2


def class_colour(class_id: int) -> BGR:
    """The colour of a class in every drawing (boxes, tags, the counts panel)."""
    return PALETTE[class_id % len(PALETTE)]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 np.ndarray, but got {got}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) BGR, but got shape {image.shape}")


class _Style:
    """Font scale, text thickness, box thickness and padding for one image size."""

    def __init__(self, image: np.ndarray) -> None:
        side = min(image.shape[:2])
        self.scale = max(MIN_FONT_SCALE, TEXT_FRAC * side / HERSHEY_PX_AT_SCALE_1)
        self.thickness = max(1, round(self.scale * 1.6))
        self.line = max(1, round(LINE_FRAC * side))
        self.pad = max(2, round(self.scale * 5))

    def text_size(self, text: str) -> tuple[int, int, int]:
        """(width, height above the baseline, baseline) of ``text``."""
        (w, h), base = cv2.getTextSize(text, FONT, self.scale, self.thickness)
        return w, h, base


def _text_colour(background: BGR) -> BGR:
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > LIGHT_LUMA else (255, 255, 255)


def _tag(image: np.ndarray, text: str, x: int, y: int, colour: BGR, style: _Style) -> None:
    """A filled tag with ``text`` whose bottom-left is (x, y), moved inside the image."""
    w, h, base = style.text_size(text)
    tag_w, tag_h = w + 2 * style.pad, h + base + 2 * style.pad
    x = min(max(0, x), max(0, image.shape[1] - tag_w))
    y = min(max(tag_h, y), image.shape[0])
    cv2.rectangle(image, (x, y - tag_h), (x + tag_w, y), colour, -1)
    cv2.putText(
        image,
        text,
        (x + style.pad, y - style.pad - base),
        FONT,
        style.scale,
        _text_colour(colour),
        style.thickness,
        cv2.LINE_AA,
    )


def _panel(image: np.ndarray, rows: Sequence[tuple[str, BGR]], style: _Style) -> None:
    """Rows of text, each with a colour swatch, on a dark translucent panel at the top left."""
    if not rows:
        return
    sizes = [style.text_size(text) for text, _ in rows]
    line_h = max(h + base for _, h, base in sizes) + style.pad
    swatch = line_h - style.pad
    width = min(image.shape[1], 3 * style.pad + swatch + max(w for w, _, _ in sizes))
    height = min(image.shape[0], style.pad + line_h * len(rows))
    region = image[:height, :width]
    region[:] = (region * (1 - PANEL_ALPHA)).astype(np.uint8)
    for k, ((text, colour), (_, _, base)) in enumerate(zip(rows, sizes, strict=True)):
        top = style.pad + k * line_h
        cv2.rectangle(image, (style.pad, top), (style.pad + swatch, top + swatch), colour, -1)
        cv2.putText(
            image,
            text,
            (2 * style.pad + swatch, top + swatch - base),
            FONT,
            style.scale,
            (255, 255, 255),
            style.thickness,
            cv2.LINE_AA,
        )


def draw_detections(
    image: np.ndarray,
    detections: Detections,
    labels: Sequence[str],
    counts: Mapping[str, int] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with each box, its label, score and track id (``#7``,
    when the tracker confirmed one), in its class colour; with ``counts``, a panel listing
    them (in ``labels`` order) at the top left.

    Raises ValueError for an image that is not (H, W, 3) uint8 or a class id with no label.
    """
    _check_image(image)
    n_labels = len(labels)
    if len(detections) and (detections.class_id.min() < 0 or detections.class_id.max() >= n_labels):
        bad = detections.class_id[(detections.class_id < 0) | (detections.class_id >= n_labels)]
        raise ValueError(
            f"class_id must be in [0, {n_labels}) for {n_labels} labels, but got {bad.tolist()}"
        )
    out = image.copy()
    style = _Style(out)
    h, w = out.shape[:2]
    # Least confident first, so the most confident box and tag end up on top.
    for k in np.argsort(detections.confidence, kind="stable"):
        x1, y1, x2, y2 = np.round(detections.xyxy[k]).astype(int)
        x1, x2 = int(np.clip(x1, 0, w - 1)), int(np.clip(x2, 0, w - 1))
        y1, y2 = int(np.clip(y1, 0, h - 1)), int(np.clip(y2, 0, h - 1))
        class_id = int(detections.class_id[k])
        colour = class_colour(class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, style.line, cv2.LINE_AA)
        text = f"{labels[class_id]} {detections.confidence[k]:.2f}"
        if detections.tracker_id is not None and detections.tracker_id[k] != UNCONFIRMED:
            text += f" #{detections.tracker_id[k]}"
        _tag(out, text, x1, y1, colour, style)
    if counts is not None:
        index = {label: i for i, label in enumerate(labels)}
        order = sorted(counts, key=lambda label: index.get(label, n_labels))
        rows = [(f"{label} {counts[label]}", class_colour(index.get(label, 0))) for label in order]
        _panel(out, rows, style)
    return out


def draw_classifications(
    image: np.ndarray,
    classifications: Classifications,
    labels: Sequence[str],
    top_k: int = TOP_K,
) -> np.ndarray:
    """A copy of ``image`` with the ``top_k`` best classes and their scores at the top left.

    Raises ValueError for an image that is not (H, W, 3) uint8 or scores and labels that differ
    in length.
    """
    _check_image(image)
    if len(classifications.scores) != len(labels):
        raise ValueError(
            f"scores and labels must have one length, but got {len(classifications.scores)} "
            f"scores for {len(labels)} labels"
        )
    out = image.copy()
    rows = [
        (f"{labels[i]} {score:.2f}", class_colour(i)) for i, score in classifications.top(top_k)
    ]
    _panel(out, rows, _Style(out))
    return out


def draw_overlays(image: np.ndarray, overlays: Sequence[Overlay]) -> np.ndarray:
    """A copy of ``image`` with each overlay's shape, its normalised points scaled to the
    image: a zone's closed outline, a line with a dot at its start (its direction). A caption
    goes in a tag above the zone's top vertex, or at the line's start.

    Raises ValueError for an image that is not (H, W, 3) uint8 or an unknown overlay kind.
    """
    _check_image(image)
    out = image.copy()
    style = _Style(out)
    h, w = out.shape[:2]
    top = np.array([w - 1, h - 1])
    for overlay in overlays:
        colour = OVERLAY_COLOURS.get(overlay.kind)
        if colour is None:
            raise ValueError(
                f"overlay kind must be one of {sorted(OVERLAY_COLOURS)}, but got {overlay.kind!r}"
            )
        xy = np.asarray(overlay.points, np.float64).reshape(-1, 2) * (w, h)
        pts = np.clip(np.round(xy), 0, top).astype(np.int32)
        closed = overlay.kind == "zone"
        for shade, width in (((0, 0, 0), style.line + HALO_PX), (colour, style.line)):
            cv2.polylines(out, [pts], closed, shade, width, cv2.LINE_AA)
        if closed:
            anchor = pts[np.lexsort((pts[:, 0], pts[:, 1]))[0]]  # the top vertex, leftmost
        else:
            anchor = pts[0]
            cv2.circle(out, (int(anchor[0]), int(anchor[1])), 2 * style.line, colour, -1)
        if overlay.caption:
            _tag(out, overlay.caption, int(anchor[0]), int(anchor[1]), colour, style)
    return out
