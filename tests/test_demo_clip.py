"""The shelf clip's slide: after the hand's part, one bag slides along its shelf across the
counting line and back, and both bundled detectors see it, with its label, in every frame of
the way, so a tracker can keep one id and a line counter sees one crossing each way."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import AgentConfig, ModelConfig, SourceConfig
from edge_agent.demo import clip
from edge_agent.geometry import box_iou
from edge_agent.pipeline import Agent
from edge_agent.types import Result

DEMO = Path(__file__).resolve().parents[1] / "edge_agent" / "demo"
TWINS = [("shelf_bundle", "onnx"), ("shelf_bundle_tflite", "tflite")]
#: Frames of the hand's part (SCHEDULE), as the clip had them before the slide was added.
HAND_PART_FRAMES = 120
#: The frames checked: from the last still frame before the slide to the first after it.
CHECKED_FRAMES = range(clip.SLIDE[0] - 1, clip.SLIDE[1] + clip.SLIDE_FRAMES + 1)
#: The detection matched to the sliding bag must overlap its true box this much in every frame.
MIN_IOU = 0.5
#: A detector's box centre may pass the line a frame before or after the true box's does.
CROSSING_TOLERANCE_FRAMES = 1


@pytest.fixture(scope="module")
def assets() -> clip.ShelfAssets:
    return clip.load_assets()


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "shelf.mp4"
    assert clip.write_clip(path) == clip.CLIP_FRAMES
    return path


def centre_x(box: np.ndarray, width: int) -> float:
    return float(box[0] + box[2]) / 2 / width


def crossings(centres: list[tuple[int, float]]) -> list[tuple[int, str]]:
    """(first frame past the line, direction) each time the centre changes side of LINE_X."""
    out = []
    for (_, before), (i, after) in itertools.pairwise(centres):
        if (before > clip.LINE_X) != (after > clip.LINE_X):
            out.append((i, "right" if after > clip.LINE_X else "left"))
    return out


def test_the_slide_follows_the_hand_part_and_keeps_every_count(assets):
    w, h = assets.size
    start = clip.expected_counts(assets, 0)
    assert clip.CLIP_FRAMES / clip.CLIP_FPS <= 16  # the demo plays in real time
    # The hand's part is over and out of view before the bag moves, and stays so.
    last_hand = max(back for _, _, back in clip.SCHEDULE) + 2 * clip.REACH_FRAMES
    assert last_hand <= HAND_PART_FRAMES <= clip.SLIDE[0]
    assert not any(clip.slide_offset(assets, i) for i in range(clip.SLIDE[0]))
    for i in range(HAND_PART_FRAMES, clip.CLIP_FRAMES):
        assert not clip.hand_in_view(i), i
        assert clip.expected_counts(assets, i) == start, i  # the bag stays on the shelf
    assert clip.slide_offset(assets, clip.CLIP_FRAMES - 1) == 0  # back in its place
    assert assets.labels[clip.SLIDE_BOX] == clip.SLIDE_LABEL
    # It passes over no other product, and moves a fraction of its width per frame.
    boxes = [clip.slide_box(assets, i) for i in range(clip.CLIP_FRAMES)]
    others = np.delete(assets.boxes, clip.SLIDE_BOX, axis=0)
    assert box_iou(np.array(boxes), others).max() == 0
    width = float(assets.boxes[clip.SLIDE_BOX, 2] - assets.boxes[clip.SLIDE_BOX, 0])
    steps = [abs(float(b[0] - a[0])) for a, b in itertools.pairwise(boxes)]
    assert max(steps) <= 0.15 * width
    # Its centre crosses the line once each way, at CROSSINGS; no other centre is near the line.
    centres = [(i, centre_x(b, w)) for i, b in enumerate(boxes)]
    assert crossings(centres) == list(clip.CROSSINGS)
    assert all(abs(c - clip.LINE_X) > 1 / w for _, c in centres)  # never exactly on it
    other_centres = (others[:, 0] + others[:, 2]) / 2 / w
    assert np.abs(other_centres - clip.LINE_X).min() > 0.05
    (lx1, ly1), (lx2, ly2) = clip.LINE
    assert lx1 == lx2 == clip.LINE_X
    bag = assets.boxes[clip.SLIDE_BOX] / np.array([w, h, w, h])
    assert ly1 <= bag[1] and bag[3] <= ly2  # the segment spans the bag's height
    top, bottom = others[:, 1] / h, others[:, 3] / h  # and no other product's end
    assert ((bottom <= ly2) | (top >= ly2)).all()


def test_the_bag_leaves_empty_shelf_and_moves_whole(assets):
    far = clip.SLIDE[0] + clip.SLIDE_FRAMES  # at the far end
    frame = clip.compose_frame(assets, far)
    assert (frame == clip.compose_frame(assets, far)).all()
    item = clip.slide_item(assets)
    x1, y1, x2, y2 = item.region
    dx = clip.slide_offset(assets, far)
    assert dx == round(clip.SLIDE_DX * assets.size[0])
    # Where it stood and is no more, the empty shelf shows.
    left = np.zeros(frame.shape[:2], bool)
    left[y1:y2, x1:x2] = item.mask
    left[y1:y2, x1 + dx : x2 + dx] &= ~item.core
    assert left.sum() > 0.9 * item.mask.sum()
    assert (frame[left] == assets.empty[left]).all()
    # At the far end, its pixels are the scene's, moved.
    moved = frame[y1:y2, x1 + dx : x2 + dx][item.core]
    assert (moved == assets.scene[y1:y2, x1:x2][item.core]).all()
    # Its pixels fill its labelled box.
    ys, xs = np.nonzero(item.core)
    found = np.array([[x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1]])
    assert box_iou(found, assets.boxes[clip.SLIDE_BOX][None])[0, 0] > 0.9
    # Frames outside the slide are the scene, untouched by it.
    assert (clip.compose_frame(assets, clip.CLIP_FRAMES - 1) == assets.scene).all()


def run_agent(bundle: Path, runtime: str, clip_path: Path) -> list[Result]:
    cfg = AgentConfig(
        device_id="probe",
        model=ModelConfig(bundle=bundle, runtime=runtime),
        sources=[SourceConfig(id="shelf", uri=str(clip_path))],
    )
    results: list[Result] = []
    agent = Agent(cfg, on_result=lambda result, frame: results.append(result), publish=False)
    with agent:
        agent.wait()
    return sorted(results, key=lambda r: r.seq)


@pytest.mark.parametrize(("folder", "runtime"), TWINS)
def test_detectors_see_the_sliding_bag_in_every_frame(folder, runtime, assets, clip_path):
    results = run_agent(DEMO / folder, runtime, clip_path)
    assert len(results) == clip.CLIP_FRAMES
    labels = results[0].labels
    w = assets.size[0]
    matched: list[tuple[int, np.ndarray]] = []
    ious, seen = [], set()
    for i in CHECKED_FRAMES:
        det = results[i].predictions
        iou = box_iou(clip.slide_box(assets, i)[None], det.xyxy)[0]
        j = int(np.argmax(iou))
        ious.append(float(iou[j]))
        seen.add(labels[det.class_id[j]])
        if matched:  # greedy IoU to the previous frame's box picks the same detection
            previous = matched[-1][1]
            assert int(np.argmax(box_iou(previous[None], det.xyxy)[0])) == j, i
        matched.append((i, det.xyxy[j]))
    assert min(ious) >= MIN_IOU, [round(v, 2) for v in ious]
    assert seen == {clip.SLIDE_LABEL}
    # The detected centre crosses the line once each way, when the true one does.
    found = crossings([(i, centre_x(box, w)) for i, box in matched])
    assert [d for _, d in found] == [d for _, d in clip.CROSSINGS]
    for (got, _), (want, _) in zip(found, clip.CROSSINGS, strict=True):
        assert abs(got - want) <= CROSSING_TOLERANCE_FRAMES, found
    # The bag is counted as standing still is, all the way.
    before = results[CHECKED_FRAMES[0]].counts
    assert all(results[i].counts == before for i in CHECKED_FRAMES), [
        (i, results[i].counts) for i in CHECKED_FRAMES if results[i].counts != before
    ]
