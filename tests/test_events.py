"""The events stage on scripted scenes: sequences split by capture-time gaps, the most seen in
one frame and the distinct confirmed tracks per label, start/update/end payloads, and the best
frame handed to the snapshot stage."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import edge_agent.analytics.events  # noqa: F401  (registers the stage type)
from edge_agent.analytics.events import SNAPSHOT_MAX_SIDE, EventsStage, sequence_id
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, stage_options, stage_types
from edge_agent.types import UNCONFIRMED, Classifications, Detections, Frame, Result

LABELS = ["deer", "boar", "person"]
T0 = 1_714_543_200.0  # 2024-05-01 06:00:00 UTC
Box = tuple[str, float, int, tuple[float, float, float, float]]  # label, conf, track, xyxy


def deer(track: int = 1, conf: float = 0.9, x: float = 100) -> Box:
    return ("deer", conf, track, (x, 100, x + 80, 160))


def boar(track: int = 7, conf: float = 0.8) -> Box:
    return ("boar", conf, track, (300, 200, 400, 260))


def make_result(ts: float, boxes: Sequence[Box] = (), seq: int = 0, labels=LABELS) -> Result:
    det = Detections(
        np.array([b[3] for b in boxes], np.float32).reshape(-1, 4),
        np.array([b[1] for b in boxes], np.float32),
        np.array([labels.index(b[0]) for b in boxes], np.int32),
        tracker_id=np.array([b[2] for b in boxes], np.int64),
    )
    return Result("trap", seq, ts, "toy", "detect", list(labels), (640, 480), det)


def make_frame(result: Result, shape: tuple[int, int] = (480, 640)) -> Frame:
    image = np.full((*shape, 3), result.seq % 256, np.uint8)
    return Frame(image, "trap", result.seq, result.ts)


def build(**options: Any) -> EventsStage:
    stage = stage_types()["events"].build(
        stage_options("events", options), StageContext("trap", StatsRegistry(), tuple(LABELS))
    )
    assert isinstance(stage, EventsStage)
    return stage


def run(stage: EventsStage, scene: Sequence[tuple[float, Sequence[Box]]]) -> list[Result]:
    """Each (seconds after T0, boxes) through the stage, with a frame; the results."""
    out = []
    for seq, (dt, boxes) in enumerate(scene):
        result = make_result(T0 + dt, boxes, seq)
        out.append(stage.process(result, make_frame(result)))
    return out


def events(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Every event payload, in order; checks each is the contract's shape and JSON-ready."""
    payloads = []
    for result in results:
        for pub in result.publications:
            assert pub.kind == "event" and pub.levels == ()
            assert isinstance(pub.payload, dict)
            keys = {"type", "id", "label", "start", "end", "max_count", "unique_count"}
            assert set(pub.payload) == keys | {"snapshot", "ts"}
            assert pub.payload["ts"] == round(result.ts, 3)
            json.dumps(pub.payload)
            payloads.append(pub.payload)
    return payloads


def brief(payloads: Sequence[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    return [(p["type"], p["label"], p["max_count"], p["unique_count"]) for p in payloads]


# ---- sequences and counts ---------------------------------------------------------------------


def test_burst_with_one_animal() -> None:
    """Three PIR stills a second apart with one deer, then a blank picture two minutes later."""
    stage = build()
    results = run(stage, [(0, [deer()]), (1, [deer()]), (2, [deer()]), (120, [])])
    got = events(results)
    assert brief(got) == [("start", "deer", 1, 1), ("end", "deer", 1, 1)]
    start, end = got
    assert start["id"] == end["id"] == "trap-20240501T060000.000Z-deer"
    assert (start["start"], start["end"]) == (T0, None)
    assert (end["start"], end["end"], end["ts"]) == (T0, T0 + 2, T0 + 120)
    assert [len(r.publications) for r in results] == [1, 0, 0, 1]  # end on the frame after the gap


def test_burst_with_two_animals() -> None:
    stage = build(update_every_s=0)
    scene = [(0, [deer(1)]), (1, [deer(1), deer(2, x=300)]), (2, [deer(1), deer(2, x=310)])]
    results = run(stage, [*scene, (200, [])])
    assert brief(events(results)) == [
        ("start", "deer", 1, 1),
        ("update", "deer", 2, 2),  # on the change, then nothing while nothing changes
        ("end", "deer", 2, 2),
    ]


def test_max_is_boxes_in_one_frame_unique_is_confirmed_tracks() -> None:
    """A burst too short for the tracker to confirm: two deer seen, no distinct track yet.
    Then one deer at a time, three tracks in turn: most in one frame 1, distinct 3."""
    stage = build()
    unconfirmed = run(stage, [(0, [deer(UNCONFIRMED), deer(UNCONFIRMED, x=300)]), (90, [])])
    assert brief(events(unconfirmed))[-1] == ("end", "deer", 2, 0)
    relay = run(stage, [(100, [deer(4)]), (101, [deer(5)]), (102, [deer(6)]), (300, [])])
    assert brief(events(relay))[-1] == ("end", "deer", 1, 3)


def test_gap_is_capture_time_since_the_last_counted_box() -> None:
    stage = build(gap_s=60)
    scene = [
        (0, [deer()]),
        (30, []),  # a blank picture keeps nothing open by itself ...
        (60, [deer()]),  # ... but 60 s after the last deer is not more than gap_s: same sequence
        (100, []),
        (120.5, [deer()]),  # 60.5 s after the last deer: a new sequence, in the same result
    ]
    results = run(stage, scene)
    got = events(results)
    assert [(p["type"], p["id"]) for p in got] == [
        ("start", "trap-20240501T060000.000Z-deer"),
        ("end", "trap-20240501T060000.000Z-deer"),
        ("start", "trap-20240501T060200.500Z-deer"),
    ]
    assert got[1]["end"] == T0 + 60
    assert len(results[4].publications) == 2


def test_time_going_back_ends_the_sequence() -> None:
    """A folder read again (on_eof: loop) starts over at its first picture's time."""
    stage = build()
    got = events(run(stage, [(0, [deer()]), (5, [deer()]), (0, [deer()])]))
    assert [p["type"] for p in got] == ["start", "end", "start"]


def test_a_scene_that_never_pauses_is_cut_at_max_sequence_s() -> None:
    """A feeder cam: a deer every 10 s for 250 s, a new track each time, never a gap. The
    sequence ends after max_sequence_s with its end and snapshot, the next box opens another,
    and no event keeps more than one period's tracks."""
    stage = build(max_sequence_s=100, gap_s=60)
    sizes = []
    results = []
    for i in range(26):
        result = make_result(T0 + 10 * i, [deer(track=i + 1)], i)
        results.append(stage.process(result, make_frame(result)))
        assert stage._open is not None
        sizes.append(len(stage._open.labels["deer"].tracks))
    got = [p for p in events(results) if p["type"] != "update"]
    assert [(p["type"], p["ts"] - T0, p["start"] - T0) for p in got] == [
        ("start", 0, 0),
        ("end", 110, 0),
        ("start", 110, 110),
        ("end", 220, 110),
        ("start", 220, 220),
    ]
    assert got[1]["end"] == T0 + 100 and got[1]["unique_count"] == 11
    assert [len(r.snapshot_requests) for r in results if r.snapshot_requests] == [1, 1]
    assert max(sizes) == 11


def test_labels_and_min_confidence_filter_what_counts() -> None:
    stage = build(labels=["deer"], min_confidence=0.5)
    got = events(run(stage, [(0, [boar()]), (1, [deer(conf=0.4)]), (2, [deer(conf=0.6)])]))
    assert brief(got) == [("start", "deer", 1, 1)]
    assert got[0]["start"] == T0 + 2  # the boar and the weak deer opened nothing


def test_two_labels_one_sequence_two_events() -> None:
    stage = build()
    got = events(run(stage, [(0, [deer()]), (3, [deer(), boar()]), (10, [boar()]), (80, [])]))
    assert brief(got) == [
        ("start", "deer", 1, 1),
        ("start", "boar", 1, 1),
        ("end", "deer", 1, 1),
        ("end", "boar", 1, 1),
    ]
    assert {p["id"] for p in got} == {
        "trap-20240501T060000.000Z-deer",
        "trap-20240501T060000.000Z-boar",  # the sequence's id: the same for both labels
    }
    deer_end, boar_end = got[2:]
    assert (deer_end["start"], deer_end["end"]) == (T0, T0 + 3)
    assert (boar_end["start"], boar_end["end"]) == (T0 + 3, T0 + 10)


def test_updates_are_rate_limited_and_pending_ones_go_out_later() -> None:
    stage = build(update_every_s=10, gap_s=60)
    herd = [deer(i, x=50 * i) for i in range(1, 5)]
    scene = [
        (0, herd[:1]),
        (2, herd[:2]),  # changed, but 2 s after the start: held back
        (4, herd[:3]),  # still held back
        (10, herd[:1]),  # 10 s: the held change goes out (max 3, 3 tracks)
        (12, herd[:4]),  # held back again ...
        (15, []),  # ... no deer in this picture
        (22, []),  # 12 s after the last message: sent, though no deer is in sight
        (100, []),
    ]
    results = run(stage, scene)
    got = events(results)
    assert [(p["type"], p["ts"] - T0, p["max_count"]) for p in got] == [
        ("start", 0, 1),
        ("update", 10, 3),
        ("update", 22, 4),
        ("end", 100, 4),
    ]


def test_sequence_id_is_source_and_start_time() -> None:
    assert sequence_id("trap", T0 + 0.0125) == "trap-20240501T060000.012Z"
    assert sequence_id("cam2", 0.0) == "cam2-19700101T000000.000Z"


def test_classifier_results_and_empty_frames_change_nothing() -> None:
    stage = build()
    cls = Result("trap", 0, T0, "toy", "classify", LABELS, (64, 64), Classifications(np.ones(3)))
    assert stage.process(cls, None).publications == []
    assert events(run(stage, [(0, []), (1, [])])) == []


def test_unknown_class_ids_are_never_counted() -> None:
    stage = build()
    result = make_result(T0, [deer()], labels=["deer"])
    result.predictions.class_id[:] = 5  # a box of a class the model's labels do not name
    assert stage.process(result, make_frame(result)).publications == []


# ---- snapshots --------------------------------------------------------------------------------


def test_end_asks_for_the_best_frame_with_the_end_payload() -> None:
    stage = build()
    scene = [(0, [deer(1)]), (1, [deer(1), deer(2, x=300)]), (2, [deer(1)]), (70, [])]
    results = run(stage, scene)
    last = results[-1]
    (request,) = last.snapshot_requests
    (end,) = last.publications
    assert request.reason == "event" and request.ts == T0 + 1
    assert request.event is end.payload  # the snapshot stage writes the file name into it
    request.event["snapshot"] = "trap-x.jpg"
    assert end.payload["snapshot"] == "trap-x.jpg"
    assert request.image is not None and np.all(request.image == 1)  # frame seq 1: two deer
    assert request.predictions is not None and len(request.predictions) == 2
    assert not any(r.snapshot_requests for r in results[:-1])


def test_best_frame_is_a_bounded_copy_with_boxes_scaled() -> None:
    stage = build()
    result = make_result(T0, [("deer", 0.9, 1, (1000, 500, 2000, 1500))])
    result.frame_size = (3840, 2160)
    frame = make_frame(result, (2160, 3840))
    stage.process(result, frame)
    frame.image[:] = 99  # the capture thread reuses nothing, but a copy must not care
    end = stage.process(make_result(T0 + 100, [], 1), None)
    (request,) = end.snapshot_requests
    assert request.image is not None
    assert request.image.shape == (720, SNAPSHOT_MAX_SIDE, 3) and np.all(request.image == 0)
    assert request.predictions is not None
    assert np.allclose(request.predictions.xyxy, [[333.33, 166.67, 666.67, 500]], atol=0.01)


def test_no_snapshot_no_picture_kept() -> None:
    stage = build(snapshot=False)
    assert stage.needs_frame is False and build().needs_frame is True
    results = run(stage, [(0, [deer()]), (90, [])])
    assert [p["type"] for p in events(results)] == ["start", "end"]
    assert results[-1].snapshot_requests == []


def test_finish_ends_the_open_sequence_in_a_given_result() -> None:
    stage = build()
    run(stage, [(0, [deer()])])
    done = stage.finish(make_result(T0 + 1, [], 1))
    assert brief(events([done])) == [("end", "deer", 1, 1)]
    assert len(done.snapshot_requests) == 1
    assert stage.finish(make_result(T0 + 2, [], 2)).publications == []


def test_close_with_an_open_sequence_says_so(caplog: pytest.LogCaptureFixture) -> None:
    stage = build()
    run(stage, [(0, [deer()])])
    with caplog.at_level(logging.WARNING, logger="edge_agent.analytics.events"):
        stage.close()
    assert "trap-20240501T060000.000Z-deer" in caplog.text


# ---- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gap_s": 0}, "gap_s"),
        ({"labels": []}, "labels"),
        ({"labels": ["deer", "deer"]}, "expected distinct labels"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"update_every_s": -1}, "update_every_s"),
        ({"gap": 60}, "gap"),
        ({"max_sequence_s": 60}, "max_sequence_s: expected more than gap_s \\(60\\)"),
        ({"gap_s": 7200}, "max_sequence_s: expected more than gap_s"),
        ({"max_sequence_s": 100_000}, "max_sequence_s"),
        ({"camtrap": {"latitude": 52.1}}, "longitude"),
        ({"camtrap": {"latitude": 95, "longitude": 4}}, "latitude"),
        ({"camtrap": {"observation_types": {"deer": "fish"}}}, "observation_types"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stage_options("events", options)


def test_labels_named_for_the_model_check() -> None:
    options = stage_options(
        "events",
        {
            "labels": ["deer", "boar"],
            "camtrap": {
                "scientific_names": {"deer": "Capreolus capreolus"},
                "observation_types": {"boar": "animal"},
            },
        },
    )
    assert options.labels_named() == [  # type: ignore[attr-defined]
        (("labels", 0), "deer"),
        (("labels", 1), "boar"),
        (("camtrap", "observation_types", "boar"), "boar"),
        (("camtrap", "scientific_names", "deer"), "deer"),
    ]


def test_events_need_a_track_stage_before() -> None:
    assert stage_types()["events"].requires == ("track",)


def test_export_true_needs_a_folder_source() -> None:
    with pytest.raises(ValueError, match="export: true needs an image folder source"):
        build(export=True)
    assert build().folder is None  # default: no exports for a source that is not a folder
