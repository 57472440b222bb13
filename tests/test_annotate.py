"""Drawing predictions: pixels change inside the boxes, the input is never written, errors name
expected versus got."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.annotate import (
    OVERLAY_COLOURS,
    class_colour,
    draw_classifications,
    draw_detections,
    draw_overlays,
)
from edge_agent.types import UNCONFIRMED, Classifications, Detections, Overlay

LABELS = ["can", "bottle", "box"]


def make_image(h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(90, 110, (h, w, 3), dtype=np.uint8)  # mid grey, no colour of PALETTE


def make_detections(xyxy: list[list[float]], class_id: list[int] | None = None) -> Detections:
    n = len(xyxy)
    return Detections(
        xyxy=np.array(xyxy, np.float32).reshape(n, 4),
        confidence=np.linspace(0.9, 0.5, n, dtype=np.float32),
        class_id=np.array(class_id if class_id is not None else [0] * n, np.int32),
    )


def test_draws_each_box_in_its_class_colour_and_leaves_the_input_alone():
    image = make_image()
    before = image.copy()
    dets = make_detections([[40, 120, 120, 220], [200, 60, 300, 200]], class_id=[0, 2])
    out = draw_detections(image, dets, LABELS)
    assert np.array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8 and out is not image
    for (x1, y1, x2, y2), class_id in ((dets.xyxy[0], 0), (dets.xyxy[1], 2)):
        x1, y1, x2, y2 = (int(v) for v in (x1, y1, x2, y2))
        inside = out[y1 : y2 + 1, x1 : x2 + 1]
        assert np.any(out[y1 : y2 + 1, x1 : x2 + 1] != before[y1 : y2 + 1, x1 : x2 + 1])
        # The box's edge is drawn in its class colour.
        edge = inside[(y2 - y1) // 2, 0].astype(int)
        assert np.abs(edge - class_colour(class_id)).max() <= 40, (edge, class_colour(class_id))
    # Far from every box (and from the tags above them) nothing changes.
    assert np.array_equal(out[225:, 140:190], before[225:, 140:190])


def test_empty_detections_change_nothing_but_the_counts_panel():
    image = make_image()
    assert np.array_equal(draw_detections(image, Detections.empty(), LABELS), image)
    with_counts = draw_detections(image, Detections.empty(), LABELS, {"can": 0, "box": 2})
    changed = np.any(with_counts != image, axis=2)
    ys, xs = np.nonzero(changed)
    assert len(ys) and xs.max() < image.shape[1] // 2 and ys.max() < image.shape[0] // 2


@pytest.mark.parametrize("size", [(48, 64), (1080, 1920)])
def test_boxes_at_and_past_the_edges_are_clipped(size):
    h, w = size
    image = make_image(h, w)
    dets = make_detections([[-10, -10, w + 10, h + 10], [0, 0, 1, 1]], class_id=[1, 2])
    out = draw_detections(image, dets, LABELS, {"bottle": 1, "box": 1})
    assert out.shape == image.shape


def test_unknown_class_and_bad_image_say_expected_and_got():
    image = make_image()
    with pytest.raises(ValueError, match=r"class_id must be in \[0, 3\) for 3 labels, but got \[5"):
        draw_detections(image, make_detections([[0, 0, 10, 10]], class_id=[5]), LABELS)
    with pytest.raises(ValueError, match=r"image must be a uint8 np.ndarray, but got float32"):
        draw_detections(image.astype(np.float32), Detections.empty(), LABELS)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\) BGR, but got shape \(240, 320\)"):
        draw_detections(image[..., 0], Detections.empty(), LABELS)
    with pytest.raises(ValueError, match=r"2 scores for 3 labels"):
        draw_classifications(image, Classifications(np.array([0.2, 0.8], np.float32)), LABELS)


def test_classifications_panel_top_left_and_input_untouched():
    image = make_image()
    before = image.copy()
    out = draw_classifications(
        image, Classifications(np.array([0.1, 0.7, 0.2], np.float32)), LABELS, top_k=2
    )
    assert np.array_equal(image, before)
    ys, _ = np.nonzero(np.any(out != image, axis=2))
    assert len(ys) and ys.max() < image.shape[0] // 2
    # The best class's colour is in the panel (its swatch).
    swatch = np.all(np.abs(out.astype(int) - class_colour(1)) <= 2, axis=2)
    assert swatch[: image.shape[0] // 4].sum() > 20


def test_same_input_same_pixels():
    image = make_image()
    dets = make_detections([[10, 10, 100, 100]], class_id=[1])
    assert np.array_equal(
        draw_detections(image, dets, LABELS, {"bottle": 1}),
        draw_detections(image, dets, LABELS, {"bottle": 1}),
    )


# --- track ids and overlays -------------------------------------------------------------------


def test_a_confirmed_track_id_is_in_the_tag_an_unconfirmed_one_is_not():
    image = make_image()
    plain = make_detections([[60, 100, 160, 200], [200, 100, 300, 200]], class_id=[0, 1])
    tracked = make_detections([[60, 100, 160, 200], [200, 100, 300, 200]], class_id=[0, 1])
    tracked.tracker_id = np.array([UNCONFIRMED, 12], np.int64)
    without, with_ids = (
        draw_detections(image, plain, LABELS),
        draw_detections(image, tracked, LABELS),
    )
    differs = np.any(without != with_ids, axis=2)
    ys, xs = np.nonzero(differs)
    # Only the second box's tag grows (" #12"): right of its label, above the box.
    assert len(ys) and ys.max() <= 100 and xs.min() >= 200
    unconfirmed = make_detections([[60, 100, 160, 200]])
    unconfirmed.tracker_id = np.array([UNCONFIRMED], np.int64)
    alone = make_detections([[60, 100, 160, 200]])
    assert np.array_equal(
        draw_detections(image, unconfirmed, LABELS), draw_detections(image, alone, LABELS)
    )


def near_colour(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - colour) <= tolerance, axis=2)


def test_a_zone_is_outlined_and_captioned_above_its_top_vertex():
    image = make_image()
    before = image.copy()
    zone = Overlay("zone", "cola", ((0.25, 0.5), (0.75, 0.5), (0.75, 0.9), (0.25, 0.9)), "cola 4/6")
    out = draw_overlays(image, [zone])
    assert np.array_equal(image, before) and out is not image
    white = near_colour(out, OVERLAY_COLOURS["zone"])
    # Each edge of the rectangle (x 80..240, y 120..216) is drawn in white.
    assert white[120, 100:220].mean() > 0.9 and white[216, 100:220].mean() > 0.9
    assert white[140:200, 80].mean() > 0.9 and white[140:200, 240].mean() > 0.9
    # Inside and far outside nothing changes; the caption's tag sits right above (80, 120).
    assert np.array_equal(out[140:200, 100:220], before[140:200, 100:220])
    assert np.array_equal(out[:90], before[:90]) and np.array_equal(out[225:], before[225:])
    tag_ys, tag_xs = np.nonzero(np.any(out[:116] != before[:116], axis=2))  # above the halo
    assert len(tag_ys) and tag_ys.min() > 90 and tag_xs.min() >= 78 and tag_xs.max() < 160
    assert white[tag_ys.min() : 116, 80:120].mean() > 0.5  # a white tag (with black text)
    assert np.array_equal(out, draw_overlays(image, [zone]))  # same input, same pixels


def test_a_line_is_drawn_with_a_dot_at_its_start():
    image = make_image()
    line = Overlay("line", "door", ((0.1, 0.5), (0.9, 0.5)), "")
    out = draw_overlays(image, [line])
    magenta = near_colour(out, OVERLAY_COLOURS["line"])
    assert magenta[120, 40:280].mean() > 0.9
    # The dot at the start, none at the end; no caption, so nothing above the line.
    assert magenta[114:127, 32].any() and not magenta[114:127, 290].any()
    assert np.array_equal(out[:105], image[:105])


def test_no_overlays_change_nothing_points_outside_are_clipped_and_bad_kinds_refused():
    image = make_image(48, 64)
    assert np.array_equal(draw_overlays(image, []), image)
    outside = Overlay("zone", "all", ((-0.5, -0.5), (1.5, -0.5), (1.5, 1.5)), "everything")
    assert draw_overlays(image, [outside]).shape == image.shape
    with pytest.raises(
        ValueError, match=r"overlay kind must be one of \['line', 'zone'\], but got"
    ):
        draw_overlays(image, [Overlay("circle", "c", ((0.5, 0.5),) * 3)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"image must be a uint8 np.ndarray, but got float32"):
        draw_overlays(image.astype(np.float32), [])
