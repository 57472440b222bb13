"""The ``track`` stage on scripted scenes whose right answer is known: birth after N hits, loss
after seconds (not frames) at any frame rate, the low-confidence second stage, classes, ids."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from edge_agent.analytics import motion, track_ids
from edge_agent.analytics.track_ids import ID_BLOCK, ID_FILE
from edge_agent.analytics.tracking import MAX_TRACKS, TrackOptions, TrackStage
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, stage_options, stage_types
from edge_agent.types import UNCONFIRMED, Classifications, Detections, Result

LABELS = ["person", "car"]


def make_stage(state_dir=None, stats=None, **options) -> TrackStage:
    context = StageContext("cam", stats or StatsRegistry(), tuple(LABELS), state_dir)
    return stage_types()["track"].build(stage_options("track", options), context)


def box(x: float, y: float = 100.0, w: float = 50.0, h: float = 120.0) -> list[float]:
    return [x, y, x + w, y + h]


def dets(boxes=(), conf=0.9, cls=0) -> Detections:
    n = len(boxes)
    return Detections(
        np.array(boxes, np.float32).reshape(n, 4),
        np.broadcast_to(np.asarray(conf, np.float32), (n,)).copy(),
        np.broadcast_to(np.asarray(cls, np.int32), (n,)).copy(),
    )


def step(stage: TrackStage, ts: float, det: Detections, labels=LABELS) -> np.ndarray:
    result = Result("cam", 0, ts, "m", "detect", list(labels), (1280, 720), det)
    out = stage.process(result, None).predictions
    assert isinstance(out, Detections) and out.tracker_id is not None
    return out.tracker_id


def times(fps: float, start: float, end: float, drop: float = 0.0, seed: int = 0) -> list[float]:
    """Capture times from start to end (inclusive) at fps, a ``drop`` fraction never delivered."""
    ts = np.arange(round(start * fps), round(end * fps) + 1) / fps
    keep = np.random.default_rng(seed).random(len(ts)) >= drop
    keep[[0, -1]] = True
    return list(ts[keep])


# --- birth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hits", [1, 2, 3, 5])
def test_a_track_is_confirmed_after_birth_hits_frames_and_unconfirmed_before(hits):
    stage = make_stage(birth_hits=hits)
    ids = [int(step(stage, i / 10, dets([box(100 + 3 * i)]))[0]) for i in range(8)]
    assert ids == [UNCONFIRMED] * (hits - 1) + [1] * (9 - hits)


def test_unconfirmed_boxes_are_all_unconfirmed_never_one_shared_id():
    stage = make_stage(birth_hits=3)
    ids = step(stage, 0.0, dets([box(100), box(400), box(700)]))
    assert list(ids) == [UNCONFIRMED] * 3
    out = stage.process(
        Result("cam", 1, 0.1, "m", "detect", LABELS, (1280, 720), dets([box(100), box(400)])),
        None,
    ).predictions
    assert isinstance(out, Detections) and not out.confirmed().any()


def test_an_unconfirmed_track_missed_once_starts_over():
    stage = make_stage(birth_hits=3)
    seen = [True, True, False, True, True, True, True]  # missed in frame 2, before a 3rd hit
    ids = [step(stage, i / 10, dets([box(100)] if s else [])) for i, s in enumerate(seen)]
    assert [int(i[0]) for i in ids if len(i)] == [-1, -1, -1, -1, 1, 1]


def test_a_frame_never_delivered_is_not_a_miss():
    stage = make_stage(birth_hits=3)
    ids = [int(step(stage, t, dets([box(100)]))[0]) for t in (0.0, 0.1, 0.3, 0.4)]
    assert ids == [-1, -1, 1, 1]  # frame 0.2 was dropped by the source, not missed


def test_a_low_confidence_box_never_starts_a_track():
    stage = make_stage(birth_hits=1)
    assert [int(step(stage, i / 10, dets([box(100)], conf=0.3))[0]) for i in range(10)] == [-1] * 10
    assert len(stage.tracker.live_ids()) == 0


# --- loss in seconds, at any frame rate -------------------------------------------------------

RATES = [(5, 0.0), (30, 0.0), (30, 0.6), (12.5, 0.3)]  # (fps, share of frames dropped)


@pytest.mark.parametrize(("fps", "drop"), RATES)
def test_a_lost_track_is_deleted_after_lost_s_seconds_whatever_the_frame_rate(fps, drop):
    stage = make_stage(lost_s=1.0, birth_hits=2)
    seen = times(fps, 0.0, 2.0, drop)
    for t in seen:
        step(stage, t, dets([box(300)]))
    assert list(stage.tracker.live_ids()) == [1]
    last = seen[-1]
    gone_at = None
    for t in times(fps, 2.0, 4.0, drop, seed=1)[1:]:
        step(stage, t, dets())
        if gone_at is None and 1 not in stage.tracker.live_ids():
            gone_at = t
    frame = 1 / fps
    assert gone_at is not None
    # kept through lost_s, gone at the first frame after it (a frame rate with drops may
    # deliver that frame later, never earlier)
    assert last + 1.0 < gone_at
    kept_until = max([t for t in times(fps, 2.0, 4.0, drop, seed=1) if t <= last + 1.0])
    assert gone_at == min(t for t in times(fps, 2.0, 4.0, drop, seed=1) if t > kept_until)
    if drop == 0:
        assert gone_at <= last + 1.0 + frame + 1e-9


@pytest.mark.parametrize(("fps", "drop"), RATES)
@pytest.mark.parametrize(("gap_s", "same"), [(0.7, True), (1.4, False)])
def test_an_object_back_within_lost_s_keeps_its_id_at_any_frame_rate(fps, drop, gap_s, same):
    """A person walks at 150 px/s, is hidden for gap_s, and comes out where walking on put
    them: within lost_s (1 s) the motion model carries the track across; after it, a new id."""
    stage = make_stage(lost_s=1.0)
    ids = []
    for t in times(fps, 0.0, 5.0, drop):
        hidden = 2.0 < t < 2.0 + gap_s
        ids.append(step(stage, t, dets([] if hidden else [box(100 + 150 * t)])))
    before, after = int(ids[len(ids) // 3][0]), int(ids[-1][0])
    assert before == 1
    assert (after == before) is same
    assert after > 0  # confirmed again by the end either way


def test_a_frame_rate_that_drops_mid_gap_keeps_the_id():
    """30 fps while seen, 5 fps while hidden and after (a busy device): a model that steps per
    frame would predict six times too little motion and lose the walker."""
    stage = make_stage(lost_s=1.0)
    seen = times(30, 0.0, 2.0)
    later = times(5, 2.2, 4.0)
    ids = [step(stage, t, dets([box(100 + 150 * t)])) for t in seen]
    for t in later:
        hidden = t < 2.7
        ids.append(step(stage, t, dets([] if hidden else [box(100 + 150 * t)])))
    assert int(ids[len(seen) - 1][0]) == int(ids[-1][0]) == 1


def test_ids_are_not_reused_after_a_track_is_deleted():
    stage = make_stage(lost_s=0.5, birth_hits=1)
    first = int(step(stage, 0.0, dets([box(100)]))[0])
    step(stage, 1.0, dets())  # deleted
    again = int(step(stage, 1.1, dets([box(100)]))[0])
    assert (first, again) == (1, 2)


def test_a_time_going_backwards_counts_as_no_time_and_does_not_crash():
    stage = make_stage(lost_s=1.0, birth_hits=1)
    assert int(step(stage, 100.0, dets([box(100)]))[0]) == 1
    step(stage, 100.9, dets())
    step(stage, 50.0, dets())  # the clock stepped back 50 s: no time passes
    assert list(stage.tracker.live_ids()) == [1]
    assert int(step(stage, 50.05, dets([box(100)]))[0]) == 1  # 0.95 s of capture time unseen
    step(stage, 51.2, dets())  # and time goes on from the new clock
    assert len(stage.tracker.live_ids()) == 0


def test_a_timestamp_that_is_not_a_number_counts_as_no_time():
    stage = make_stage(lost_s=1.0, birth_hits=1)
    step(stage, 10.0, dets([box(100)]))
    step(stage, float("nan"), dets())
    assert int(step(stage, 10.9, dets([box(100)]))[0]) == 1
    step(stage, 12.0, dets())
    assert len(stage.tracker.live_ids()) == 0  # time still runs from the last real clock


def test_a_box_that_is_not_a_number_is_nobodys_and_spoils_nothing():
    stage = make_stage(birth_hits=1)
    bad = [float("nan"), 100, 150, 220]
    for i in range(3):
        det = dets([box(100), bad, box(400)], conf=np.array([0.9, 0.9, np.nan]))
        ids = step(stage, i / 10, det)
        assert list(ids) == [1, UNCONFIRMED, UNCONFIRMED]
    assert list(stage.tracker.live_ids()) == [1]


def test_a_clock_jumping_forward_expires_tracks():
    stage = make_stage(lost_s=1.0, birth_hits=1)
    step(stage, 0.0, dets([box(100)]))
    assert int(step(stage, 3600.0, dets([box(100)]))[0]) == 2


def test_motion_is_in_seconds_two_half_steps_are_one_step():
    state = motion.initial_state(np.array([box(100), box(500, w=80)], np.float64))
    state[motion.V, :, :2] = [[120.0, -30.0], [-60.0, 10.0]]  # moving, not resizing
    motion.correct(state, np.array([0, 1]), np.array([box(101), box(499, w=80)]))
    state[motion.V, :, 2:] = 0.0
    halves, whole = state.copy(), state.copy()
    motion.predict(halves, 0.05)
    motion.predict(halves, 0.05)
    motion.predict(whole, 0.1)
    np.testing.assert_allclose(halves, whole, rtol=1e-12, atol=1e-9)


# --- the second, low-confidence stage -----------------------------------------------------------


def _dip_ids(**options) -> list[int]:
    """A walker whose score dips to 0.3 from 1.0 s to 1.6 s (partly hidden), at 10 fps."""
    stage = make_stage(**options)
    ids = []
    for i in range(25):
        t = i / 10
        conf = 0.3 if 1.0 <= t < 1.6 else 0.9
        ids.append(int(step(stage, t, dets([box(100 + 80 * t)], conf=conf))[0]))
    return ids


def test_a_score_dip_keeps_the_track_and_its_boxes_through_the_second_stage():
    ids = _dip_ids(lost_s=0.3)
    assert ids[2:] == [1] * 23  # held, and reported, through the dip


def test_without_the_second_stage_a_long_dip_loses_the_track():
    ids = _dip_ids(lost_s=0.3, low_threshold=0.5)  # low == high: no second stage
    assert ids[10:16] == [UNCONFIRMED] * 6  # the dipped boxes are nobody's
    assert ids[-1] == 2  # and the walker comes back as someone new


def test_the_second_stage_only_extends_confirmed_tracks():
    stage = make_stage(birth_hits=3)
    step(stage, 0.0, dets([box(100)]))
    ids = [int(step(stage, 0.1 * i, dets([box(100)], conf=0.3))[0]) for i in range(1, 6)]
    assert ids == [UNCONFIRMED] * 5
    assert len(stage.tracker.live_ids()) == 0


# --- classes and labels -----------------------------------------------------------------------


@pytest.mark.parametrize(("consistent", "expect_same"), [(True, False), (False, True)])
def test_class_consistent_matching(consistent, expect_same):
    stage = make_stage(class_consistent=consistent, birth_hits=1)
    first = int(step(stage, 0.0, dets([box(100)], cls=0))[0])
    flicker = int(step(stage, 0.1, dets([box(101)], cls=1))[0])
    assert (flicker == first) is expect_same


@pytest.mark.parametrize(("consistent", "swaps"), [(True, False), (False, True)])
def test_a_person_and_a_car_trading_places_keep_their_ids_only_by_class(consistent, swaps):
    """Two overlapping boxes trade places: by IoU alone each track would take the other's
    box; matching within a class keeps each object's id."""
    stage = make_stage(class_consistent=consistent, birth_hits=1)
    a, b = box(100, w=60), box(120, w=60)
    person, car = step(stage, 0.0, dets([a, b], cls=np.array([0, 1])))
    person2, car2 = step(stage, 0.1, dets([b, a], cls=np.array([0, 1])))
    assert ((person2, car2) == (car, person)) is swaps
    assert ((person2, car2) == (person, car)) is not swaps


def test_a_swapped_model_with_other_label_order_keeps_tracks_by_label_name():
    stage = make_stage(birth_hits=1)
    assert int(step(stage, 0.0, dets([box(100)], cls=0))[0]) == 1  # person = 0
    swapped = ["car", "dog", "person"]
    assert int(step(stage, 0.1, dets([box(102)], cls=2), labels=swapped)[0]) == 1
    assert int(step(stage, 0.2, dets([box(104)], cls=0), labels=swapped)[0]) == 2  # a car


def test_a_class_id_outside_the_labels_is_tracked_under_its_own_key():
    stage = make_stage(birth_hits=1)
    ids = step(stage, 0.0, dets([box(100), box(400)], cls=np.array([7, -1])))
    again = step(stage, 0.1, dets([box(101), box(401)], cls=np.array([7, -1])))
    assert list(ids) == list(again) == [1, 2]


# --- output and lifecycle ---------------------------------------------------------------------


def test_boxes_and_data_stay_as_detected_and_empty_frames_work():
    stage = make_stage(birth_hits=1)
    assert step(stage, 0.0, dets()).shape == (0,)
    det = dets([box(100.25), box(300.5)], conf=np.array([0.9, 0.2]))
    det.data["zone"] = np.array([3, 4])
    out = stage.process(Result("cam", 1, 0.1, "m", "detect", LABELS, (640, 480), det), None)
    got = out.predictions
    assert isinstance(got, Detections) and got.tracker_id is not None
    np.testing.assert_array_equal(got.xyxy, det.xyxy)
    np.testing.assert_array_equal(got.data["zone"], [3, 4])
    assert got.tracker_id.dtype == np.int64 and list(got.tracker_id) == [1, UNCONFIRMED]
    assert step(stage, 0.2, dets()).shape == (0,)
    assert list(stage.tracker.live_ids()) == [1]


def test_a_classification_passes_untouched():
    stage = make_stage()
    scores = Classifications(np.array([0.2, 0.8], np.float32))
    result = Result("cam", 0, 0.0, "m", "classify", LABELS, (640, 480), scores)
    assert stage.process(result, None).predictions is scores


def test_stats_count_confirmed_tracks_and_live_ones():
    stats = StatsRegistry()
    stage = make_stage(stats=stats, birth_hits=1, lost_s=0.5)
    step(stage, 0.0, dets([box(100), box(400)]))
    step(stage, 0.1, dets([box(100)]))
    step(stage, 1.0, dets())
    assert stats.counter("track", "tracks_confirmed", "cam").value == 2
    assert stats.gauge("track", "tracks_live", "cam").value == 0


def test_tracks_kept_are_bounded():
    stage = make_stage(birth_hits=1, lost_s=60)
    grid = [box(x, y, 10, 10) for x in range(0, 1280, 40) for y in range(0, 720, 30)]
    assert len(grid) > MAX_TRACKS
    step(stage, 0.0, dets(grid))
    step(stage, 0.1, dets())
    assert len(stage.tracker.live_ids()) == MAX_TRACKS


def test_ids_continue_after_a_restart_with_a_state_folder(tmp_path):
    stage = make_stage(state_dir=tmp_path, birth_hits=1)
    assert list(step(stage, 0.0, dets([box(100), box(400)]))) == [1, 2]
    stage.close()
    again = make_stage(state_dir=tmp_path, birth_hits=1)
    first = int(step(again, 0.0, dets([box(100)]))[0])
    assert first > 2 and first == 1 + ID_BLOCK + 2  # the block reserved before, skipped
    assert (tmp_path / ID_FILE).read_text().strip() == str(first + 1 + ID_BLOCK)


@pytest.mark.parametrize("content", ["garbage", "0", "-5", "", "9" * 20])
def test_a_damaged_id_file_is_moved_aside_and_ids_restart_above_any_earlier_run(
    tmp_path, caplog, monkeypatch, content
):
    """Ids are never reused: after a damaged file they start at the milliseconds since the
    epoch, which no earlier run can have reached (docs/tracking.md)."""
    now = 1_700_000_000.25
    monkeypatch.setattr(track_ids.time, "time", lambda: now)
    (tmp_path / ID_FILE).write_text(content)
    os.utime(tmp_path / ID_FILE, (now - 60, now - 60))  # last written a minute ago
    with caplog.at_level(logging.ERROR):
        stage = make_stage(state_dir=tmp_path, birth_hits=1)
        ids = step(stage, 0.0, dets([box(100), box(300)]))
    assert list(ids) == [1_700_000_000_250, 1_700_000_000_251]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{ID_FILE}.damaged-")]
    assert len(aside) == 1 and aside[0].read_text() == content  # kept for a look
    assert f"{ID_FILE} holds {content!r}" in caplog.text and aside[0].name in caplog.text
    assert int((tmp_path / ID_FILE).read_text()) == ids[-1] + 1 + ID_BLOCK
    again = make_stage(state_dir=tmp_path, birth_hits=1)  # and the new file is read as usual
    assert int(step(again, 0.0, dets([box(100)]))[0]) == ids[-1] + 1 + ID_BLOCK


def test_ids_after_a_damaged_file_stay_above_its_last_change_if_the_clock_is_behind(
    tmp_path, monkeypatch
):
    """A device without a real-time clock may boot in 1970: the damaged file's own time
    still bounds what earlier runs reached."""
    monkeypatch.setattr(track_ids.time, "time", lambda: 12.0)
    damaged = tmp_path / ID_FILE
    damaged.write_text("\x00\x00")
    os.utime(damaged, (1_700_000_000.0, 1_700_000_000.0))
    stage = make_stage(state_dir=tmp_path, birth_hits=1)
    assert int(step(stage, 0.0, dets([box(100)]))[0]) == 1_700_000_000_000


def test_an_unwritable_state_folder_warns_and_tracking_goes_on(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the state folder should be
    with caplog.at_level(logging.WARNING):
        stage = make_stage(state_dir=blocked, birth_hits=1)
        assert list(step(stage, 0.0, dets([box(100), box(300)]))) == [1, 2]
    assert "ids may repeat after a restart" in caplog.text


# --- options --------------------------------------------------------------------------------


def test_defaults():
    opt = TrackOptions()
    assert (opt.high_threshold, opt.low_threshold, opt.match_iou) == (0.5, 0.1, 0.2)
    assert (opt.birth_hits, opt.lost_s, opt.class_consistent) == (3, 1.0, True)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"high_threshold": 0}, "high_threshold"),
        ({"high_threshold": 1.5}, "high_threshold"),
        ({"low_threshold": 0.6}, "low_threshold"),
        ({"low_threshold": -0.1}, "low_threshold"),
        ({"match_iou": 1.0}, "match_iou"),
        ({"birth_hits": 0}, "birth_hits"),
        ({"birth_hits": 2.5}, "birth_hits"),
        ({"lost_s": -1}, "lost_s"),
        ({"lost_s": 3600}, "lost_s"),
        ({"class_consistent": "maybe"}, "class_consistent"),
        ({"lost_frames": 30}, "lost_frames"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=field) as info:
        stage_options("track", options)
    assert "track" in str(info.value)


def test_an_unknown_option_suggests_the_near_one():
    with pytest.raises(ValueError, match="lost_s"):
        stage_options("track", {"lost_sec": 2})
