"""The ``collect`` stage: which frames it keeps (a score in the band, a track whose label changed,
a random sample), the caps (rate, bytes), the COCO folder it writes (atomic, continued after a
restart) and the config it refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.analytics.collect import CollectStage
from edge_agent.analytics.collect_options import CollectOptions
from edge_agent.analytics.collect_writer import ANNOTATIONS
from edge_agent.config.sources import SourceConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, build_chain, stage_options
from edge_agent.types import Classifications, Detections, Frame, Result

LABELS = ["red", "green", "blue"]
W, H = 320, 240
T0 = 1_790_000_000.0


def frame(seq: int, ts: float, seed: int = 0, size: tuple[int, int] = (W, H)) -> Frame:
    """Noise, so each JPEG is large and unlike the others."""
    rng = np.random.default_rng(seed * 100_003 + seq)
    image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Frame(image, "cam", seq, ts)


def boxes(scores: list[float], classes: list[int] | None = None,
          tracks: list[int] | None = None) -> Detections:  # fmt: skip
    n = len(scores)
    xyxy = np.array([[10 + 40 * i, 20, 50 + 40 * i, 80] for i in range(n)], np.float32)
    return Detections(
        xyxy.reshape(n, 4),
        np.array(scores, np.float32),
        np.array(classes if classes is not None else [0] * n, np.int32),
        None if tracks is None else np.array(tracks, np.int64),
    )


def result(seq: int, ts: float, predictions: Detections | Classifications, **kw: Any) -> Result:
    task = "detect" if isinstance(predictions, Detections) else "classify"
    return Result("cam", seq, ts, "toy@1", task, LABELS, (W, H), predictions, **kw)


def stage(tmp_path: Path, stats: StatsRegistry | None = None, **options: Any) -> CollectStage:
    opts = stage_options("collect", {"sample_rate": 0, "min_interval_s": 0, **options})
    assert isinstance(opts, CollectOptions)
    context = StageContext("cam", stats or StatsRegistry(), tuple(LABELS), tmp_path, None, "dev1")
    return CollectStage(opts, context)


def field_doc(tmp_path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((tmp_path / "field" / ANNOTATIONS).read_text())
    return doc


def files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "field" / "images").iterdir())


def counters(stats: StatsRegistry) -> dict[str, Any]:
    return stats.snapshot()["stage"]["cam/collect"]


# --- what is kept ------------------------------------------------------------------------------


def test_a_box_in_the_band_is_kept_with_its_prelabels(tmp_path: Path) -> None:
    stats = StatsRegistry()
    s = stage(tmp_path, stats)
    s.process(result(0, T0, boxes([0.9])), frame(0, T0))  # sure: not kept
    s.process(result(1, T0 + 1, boxes([0.95, 0.45], [0, 2])), frame(1, T0 + 1))
    s.process(result(2, T0 + 2, boxes([0.2])), frame(2, T0 + 2))  # background: not kept
    doc = field_doc(tmp_path)
    assert [c["name"] for c in doc["categories"]] == LABELS
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3]
    (image,) = doc["images"]
    assert image["reasons"] == ["band"] and image["seq"] == 1
    assert (image["device"], image["source"], image["model"]) == ("dev1", "cam", "toy@1")
    assert image["ts"] == T0 + 1 and (image["width"], image["height"]) == (W, H)
    assert image["file_name"].startswith("dev1_cam_") and files(tmp_path) == [image["file_name"]]
    anns = doc["annotations"]
    assert [(a["category_id"], a["bbox"], a["score"]) for a in anns] == [
        (1, [10.0, 20.0, 40.0, 60.0], 0.95),
        (3, [50.0, 20.0, 40.0, 60.0], 0.45),
    ]
    picture = cv2.imread(str(tmp_path / "field" / "images" / image["file_name"]))
    assert picture.shape == (H, W, 3)
    assert counters(stats)["collect_kept"] == 1 and counters(stats)["collect_kept_band"] == 1


def test_a_classifier_in_the_band_keeps_image_level_labels(tmp_path: Path) -> None:
    s = stage(tmp_path, score_band=[0.4, 0.7])
    unsure = Classifications(np.array([0.5, 0.3, 0.2], np.float32))
    sure = Classifications(np.array([0.9, 0.05, 0.05], np.float32))
    s.process(result(0, T0, sure), frame(0, T0))
    thresholds = np.full(3, 0.6, np.float32)
    s.process(result(1, T0 + 1, unsure, class_thresholds=thresholds), frame(1, T0 + 1))
    (image,) = field_doc(tmp_path)["images"]
    # below its 0.6 threshold: no decided label, the scores say what it hesitated between
    assert image["classification"] == {
        "multilabel": False, "labels": [], "scores": {"red": 0.5, "green": 0.3, "blue": 0.2}
    }  # fmt: skip
    assert field_doc(tmp_path)["annotations"] == []


def test_a_track_changing_label_is_a_disagreement(tmp_path: Path) -> None:
    s = stage(tmp_path, score_band=None, disagreement=True)
    frames = [([7, 8], [0, 1]), ([7, 8], [0, 1]), ([7, 8], [2, 1]), ([-1, 8], [1, 1])]
    for seq, (tracks, classes) in enumerate(frames):
        det = boxes([0.9, 0.9], classes, tracks)
        s.process(result(seq, T0 + seq, det), frame(seq, T0 + seq))
    (image,) = field_doc(tmp_path)["images"]
    # frame 2: track 7 red -> blue; frame 3's change is an unconfirmed box, not a track
    assert image["seq"] == 2 and image["reasons"] == ["disagreement"]


def test_disagreement_through_a_real_tracker(tmp_path: Path) -> None:
    specs = [
        ("track", stage_options("track", {"birth_hits": 1, "class_consistent": False})),
        ("collect", stage_options("collect", {"score_band": None, "disagreement": True,
                                              "sample_rate": 0, "min_interval_s": 0})),
    ]  # fmt: skip
    chain = build_chain("cam", specs, StatsRegistry(), labels=LABELS, state_dir=tmp_path)
    for seq, cls in enumerate([0, 0, 0, 1, 1]):  # the same box, its label flips at frame 3
        chain.process(result(seq, T0 + seq * 0.1, boxes([0.9], [cls])), frame(seq, T0))
    (image,) = field_doc(tmp_path)["images"]
    assert image["seq"] == 3 and image["reasons"] == ["disagreement"]


def test_the_sample_is_random_seeded_and_about_its_rate(tmp_path: Path) -> None:
    def kept(folder: Path, seed: int) -> list[int]:
        s = stage(folder, score_band=None, sample_rate=0.25, seed=seed, max_per_hour=10_000)
        for seq in range(200):
            s.process(result(seq, T0 + seq, boxes([0.99])), frame(seq, T0, size=(32, 32)))
        return [i["seq"] for i in field_doc(folder)["images"]]

    a, again, other = kept(tmp_path / "a", 1), kept(tmp_path / "b", 1), kept(tmp_path / "c", 2)
    assert 25 <= len(a) <= 75  # binomial(200, 0.25): mean 50, sd 6
    assert a == again and a != other
    assert all(i["reasons"] == ["sample"] for i in field_doc(tmp_path / "a")["images"])


def test_frames_the_motion_gate_skipped_are_not_kept(tmp_path: Path) -> None:
    s = stage(tmp_path)
    s.process(result(0, T0, boxes([0.5]), inferred=False), frame(0, T0))
    assert not (tmp_path / "field").exists()


# --- caps --------------------------------------------------------------------------------------


def test_the_rate_cap_per_hour_and_between_frames(tmp_path: Path) -> None:
    stats = StatsRegistry()
    s = stage(tmp_path, stats, max_per_hour=3, min_interval_s=10)
    times = [0, 5, 10, 25, 40, 55, 3600, 3605, 3620]
    for seq, dt in enumerate(times):
        s.process(result(seq, T0 + dt, boxes([0.5])), frame(seq, T0 + dt, size=(32, 32)))
    kept = [round(i["ts"] - T0) for i in field_doc(tmp_path)["images"]]
    # 5 is too soon after 0; 40 and 55 exceed 3 in the hour; at 3600 frame 0 has left the hour,
    # at 3620 frame 10 has too
    assert kept == [0, 10, 25, 3600, 3620]
    assert counters(stats)["collect_skipped_rate"] == 4


def test_the_byte_cap_removes_the_oldest_frames(tmp_path: Path) -> None:
    stats = StatsRegistry()
    s = stage(tmp_path, stats, max_bytes=1_000_000, quality=95)
    for seq in range(10):  # ~200 kB of noise each
        s.process(result(seq, T0 + seq, boxes([0.5])), frame(seq, T0, size=(480, 360)))
    doc = field_doc(tmp_path)
    seqs = [i["seq"] for i in doc["images"]]
    on_disk = sum(p.stat().st_size for p in (tmp_path / "field").rglob("*") if p.is_file())
    assert on_disk <= 1_000_000 and s.fieldset is not None and s.fieldset.total_bytes == on_disk
    assert seqs == list(range(10 - len(seqs), 10)) and 2 <= len(seqs) < 10  # the newest stay
    assert files(tmp_path) == sorted(i["file_name"] for i in doc["images"])
    assert {a["image_id"] for a in doc["annotations"]} == {i["id"] for i in doc["images"]}
    assert counters(stats)["collect_evicted"] == 10 - len(seqs)


# --- the folder: atomic, continued -------------------------------------------------------------


def test_a_restart_continues_the_set_and_sweeps_a_crash(tmp_path: Path) -> None:
    s = stage(tmp_path)
    for seq in range(2):
        s.process(result(seq, T0 + seq, boxes([0.5])), frame(seq, T0 + seq))
    images = tmp_path / "field" / "images"
    (images / "dev1_cam_half-written.jpg").write_bytes(b"\xff\xd8")  # a crash before the JSON
    (images / ".x.jpg.abc.tmp").write_bytes(b"\xff")
    again = stage(tmp_path)
    again.process(result(0, T0 + 100, boxes([0.5])), frame(0, T0 + 100))
    doc = field_doc(tmp_path)
    assert [i["id"] for i in doc["images"]] == [1, 2, 3]
    assert [a["id"] for a in doc["annotations"]] == [1, 2, 3]
    assert files(tmp_path) == sorted(i["file_name"] for i in doc["images"])


def test_a_failed_json_write_leaves_the_previous_json(tmp_path: Path, monkeypatch) -> None:
    stats = StatsRegistry()
    s = stage(tmp_path, stats)
    s.process(result(0, T0, boxes([0.5])), frame(0, T0))
    before = (tmp_path / "field" / ANNOTATIONS).read_bytes()
    real_replace = os.replace

    def power_cut(src: Any, dst: Any) -> None:  # the image lands, the JSON's rename does not
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", power_cut)
    s.process(result(1, T0 + 1, boxes([0.5])), frame(1, T0 + 1))
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "field" / ANNOTATIONS).read_bytes() == before
    assert counters(stats)["collect_errors"] == 1
    assert not list((tmp_path / "field" / "annotations").glob(".*.tmp"))
    stage(tmp_path).process(result(2, T0 + 2, boxes([0.5])), frame(2, T0 + 2))
    doc = field_doc(tmp_path)
    assert [i["seq"] for i in doc["images"]] == [0, 2]  # frame 1's image swept as an orphan
    assert files(tmp_path) == sorted(i["file_name"] for i in doc["images"])


# --- config ------------------------------------------------------------------------------------


def source_with(*stages: dict[str, Any]) -> SourceConfig:
    return SourceConfig.model_validate({"id": "cam", "uri": "clip.mp4", "stages": list(stages)})


def test_disagreement_needs_a_tracker_that_lets_labels_change() -> None:
    with pytest.raises(ValueError, match=r"collect\.disagreement needs a 'track' stage"):
        source_with({"type": "collect", "disagreement": True})
    with pytest.raises(ValueError, match=r"collect\.disagreement needs track\.class_consistent"):
        source_with({"type": "track"}, {"type": "collect", "disagreement": True})
    ok = source_with(
        {"type": "track", "class_consistent": False}, {"type": "collect", "disagreement": True}
    )
    assert [s.type for s in ok.stages] == ["track", "collect"]
    assert source_with({"type": "collect"}).stages[0].options() == CollectOptions()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"score_band": [0.7, 0.2]}, "score_band"),
        ({"score_band": [0.2]}, "score_band"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"max_bytes": 10}, "max_bytes"),
        ({"max_per_hour": 0}, "max_per_hour"),
        ({"min_interval_s": -1}, "min_interval_s"),
        ({"scor_band": [0.1, 0.2]}, "scor_band"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        source_with({"type": "collect", **options})


def test_one_collect_stage_per_source() -> None:
    with pytest.raises(ValueError, match="one 'collect' stage"):
        source_with({"type": "collect"}, {"type": "collect"})


def test_max_width_scales_the_frame_and_its_boxes(tmp_path: Path) -> None:
    s = stage(tmp_path, max_width=160)
    s.process(result(0, T0, boxes([0.5])), frame(0, T0))
    (image,) = field_doc(tmp_path)["images"]
    (ann,) = field_doc(tmp_path)["annotations"]
    assert (image["width"], image["height"]) == (160, 120)
    assert ann["bbox"] == [5.0, 10.0, 20.0, 30.0] and ann["area"] == 600.0
    picture = cv2.imread(str(tmp_path / "field" / "images" / image["file_name"]))
    assert picture.shape == (120, 160, 3)


def test_a_swapped_model_with_new_labels_keeps_the_old_ids(tmp_path: Path) -> None:
    s = stage(tmp_path)
    s.process(result(0, T0, boxes([0.5], [2])), frame(0, T0))
    swapped = result(1, T0 + 1, boxes([0.5], [0]))
    swapped.labels = ["cat", "red"]  # the new model's label 0 is one the set has not seen
    s.process(swapped, frame(1, T0 + 1))
    doc = field_doc(tmp_path)
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [
        (1, "red"), (2, "green"), (3, "blue"), (4, "cat")
    ]  # fmt: skip
    assert [a["category_id"] for a in doc["annotations"]] == [3, 4]


def test_a_json_edited_beyond_reading_is_moved_aside(tmp_path: Path) -> None:
    stage(tmp_path).process(result(0, T0, boxes([0.5])), frame(0, T0))
    (tmp_path / "field" / ANNOTATIONS).write_text('{"images": ')
    stage(tmp_path).process(result(1, T0 + 1, boxes([0.5])), frame(1, T0 + 1))
    aside = list((tmp_path / "field" / "annotations").glob("instances_default.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"images": '
    doc = field_doc(tmp_path)
    assert [(i["id"], i["seq"]) for i in doc["images"]] == [(1, 1)]
    assert files(tmp_path) == [doc["images"][0]["file_name"]]  # the old set's image swept


def test_the_rate_cap_holds_across_a_restart(tmp_path: Path) -> None:
    stage(tmp_path, min_interval_s=10).process(result(0, T0, boxes([0.5])), frame(0, T0))
    stats = StatsRegistry()
    again = stage(tmp_path, stats, min_interval_s=10)
    for seq, dt in ((1, 5), (2, 11)):
        again.process(result(seq, T0 + dt, boxes([0.5])), frame(seq, T0 + dt))
    assert [i["seq"] for i in field_doc(tmp_path)["images"]] == [0, 2]
    assert counters(stats)["collect_skipped_rate"] == 1


def test_a_frame_larger_than_the_cap_is_skipped_and_counted(tmp_path: Path) -> None:
    stats = StatsRegistry()
    s = stage(tmp_path, stats, max_bytes=1_000_000, quality=100)
    s.process(result(0, T0, boxes([0.5])), frame(0, T0, size=(1200, 900)))  # ~2 MB of noise
    s.process(result(1, T0 + 1, boxes([0.5])), frame(1, T0 + 1))
    assert [i["seq"] for i in field_doc(tmp_path)["images"]] == [1]
    assert counters(stats)["collect_skipped_too_large"] == 1
    assert counters(stats)["collect_errors"] == 0


def test_boxes_past_the_edge_are_clipped_to_the_image(tmp_path: Path) -> None:
    det = Detections(np.array([[-8, 200, 40, 260], [330, 0, 400, 50]], np.float32),
                     np.array([0.5, 0.5], np.float32), np.zeros(2, np.int32))  # fmt: skip
    stage(tmp_path).process(result(0, T0, det), frame(0, T0))
    (ann,) = field_doc(tmp_path)["annotations"]  # the second lies wholly outside: dropped
    assert ann["bbox"] == [0.0, 200.0, 40.0, 40.0]
