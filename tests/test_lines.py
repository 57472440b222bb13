"""The lines stage: crossings counted once per track and direction, jitter and id switches
adding nothing, lines at the frame edge still counting, totals surviving a restart.

Scenes are scripted: each object is a box moving at a known speed, clipped by the frame as a
detector clips it, and missing once too little of it is visible; the tracker ids are given, so
the truth (who crossed where) is known exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.analytics import id_swaps
from edge_agent.analytics import tallies as tallies_module
from edge_agent.analytics.line_options import LinesOptions
from edge_agent.analytics.lines import LineCounter
from edge_agent.config import ConfigError, label_problems, parse_config
from edge_agent.config.loader import read_config_text
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import (
    StageChain,
    StageContext,
    build_chain,
    stage_options,
    stage_types,
)
from edge_agent.types import Classifications, Detections, Result

W, H = 640, 480
LABELS = ["person", "car"]
FPS = 10.0
T0 = 1_700_000_000.0
#: A detector stops seeing an object when less than this fraction of its width is in frame.
MIN_VISIBLE = 0.3

Obj = tuple[int, tuple[float, float, float, float], int]  # (track id, normalised xyxy, class)


def result(objs: list[Obj], seq: int, labels: list[str] = LABELS) -> Result:
    """One frame's result: boxes in pixels, clipped to the frame; tiny slivers dropped."""
    kept = []
    for tid, (x1, y1, x2, y2), cls in objs:
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, 1), min(y2, 1)
        if (cx2 - cx1) >= MIN_VISIBLE * (x2 - x1) and (cy2 - cy1) >= MIN_VISIBLE * (y2 - y1):
            kept.append((tid, (cx1, cy1, cx2, cy2), cls))
    det = Detections(
        xyxy=np.array([b for _, b, _ in kept], np.float32).reshape(-1, 4) * [W, H, W, H],
        confidence=np.full(len(kept), 0.9, np.float32),
        class_id=np.array([c for _, _, c in kept], np.int32),
        tracker_id=np.array([t for t, _, _ in kept], np.int64),
    )
    return Result("cam", seq, T0 + seq / FPS, "m", "detect", labels, (W, H), det)


def walker(tid: int, foot: tuple[float, float], step: tuple[float, float], n: int, cls: int = 0):
    """Boxes 0.1 wide, 0.3 tall whose bottom centre starts at ``foot`` and moves ``step``."""
    for i in range(n):
        x, y = foot[0] + step[0] * i, foot[1] + step[1] * i
        yield (tid, (x - 0.05, y - 0.3, x + 0.05, y), cls)


def stage(tmp: Path | None = None, **line) -> LineCounter:
    spec = {"name": "door", "start": [0.5, 1.0], "end": [0.5, 0.0], "in_side": "right"}
    opts = stage_options("lines", {"lines": [{**spec, **line}]})
    assert isinstance(opts, LinesOptions)
    return LineCounter(opts, StageContext("cam", StatsRegistry(), tuple(LABELS), tmp))


def run(counter: LineCounter, *tracks, start: int = 0) -> list[Result]:
    """Frames built from the tracks (iterables of Obj, or None for a frame without that one)."""
    frames = [[o for o in objs if o is not None] for objs in zip(*tracks, strict=False)]
    return [counter.process(result(objs, start + i), None) for i, objs in enumerate(frames)]


def last_line(results: list[Result]) -> dict:
    payloads = [p.payload for r in results for p in r.publications if p.kind == "line"]
    assert isinstance(payloads[-1], dict)
    return payloads[-1]


def totals(counter: LineCounter) -> tuple[int, int]:
    return counter.tallies[0].total.totals()


def test_registered_after_track():
    assert stage_types()["lines"].requires == ("track",)


def test_in_is_the_right_hand_side_looking_from_start_to_end():
    """Image y grows down: a line drawn upwards has screen-right on its right, one drawn
    downwards has screen-left there."""
    up, down = stage(), stage(start=[0.5, 0.0], end=[0.5, 1.0])
    run(up, walker(1, (0.2, 0.6), (0.02, 0), 30))
    run(down, walker(1, (0.2, 0.6), (0.02, 0), 30))
    assert (totals(up), totals(down)) == ((1, 0), (0, 1))


def test_crossings_both_ways_counted_with_payload_and_overlay():
    counter = stage()
    out = run(counter, walker(1, (0.2, 0.6), (0.02, 0), 30))  # left to right: in
    assert totals(counter) == (1, 0)
    out += run(counter, walker(2, (0.8, 0.6), (-0.02, 0), 30), start=30)  # right to left
    assert totals(counter) == (1, 1)
    body = last_line(out)
    assert (body["in"], body["out"]) == (1, 1)
    assert body["labels"] == {"person": {"in": 1, "out": 1}}
    assert body["hour"]["in"] == 1 and body["day"]["out"] == 1
    assert body["ts"] == next(
        r.ts for r in out if r.publications and r.publications[0].payload is body
    )
    published = [p for r in out for p in r.publications]
    assert {p.levels for p in published} == {("door",)}
    assert len(published) == 3  # the first frame's state, then one per crossing
    assert out[-1].overlays[-1].caption == "in 1 out 1"
    assert out[-1].overlays[-1].points == ((0.5, 1.0), (0.5, 0.0))


def test_in_side_left_swaps_the_directions():
    counter = stage(in_side="left")
    run(counter, walker(1, (0.2, 0.6), (0.02, 0), 30))
    assert totals(counter) == (0, 1)


def jitter(tid: int, x: float, amplitude: float, n: int, period: int = 1):
    for i in range(n):
        dx = amplitude if (i // period) % 2 else -amplitude
        yield (tid, (x + dx - 0.05, 0.3, x + dx + 0.05, 0.6), 0)


@pytest.mark.parametrize(
    ("amplitude", "period"),
    [(0.015, 1), (0.015, 7), (0.05, 1)],  # inside the band; slow; beyond it for one frame
)
def test_a_box_jittering_on_the_line_counts_nothing(amplitude, period):
    counter = stage()
    out = run(counter, jitter(1, 0.5, amplitude, 300, period))
    assert totals(counter) == (0, 0)
    assert len([p for r in out for p in r.publications]) == 1  # only the first frame's state


def test_without_hysteresis_and_min_frames_the_jitter_would_count():
    """The same scene as above, with the protections off: proves the scene is a real test."""
    counter = stage(hysteresis=0.0, min_frames=1)
    run(counter, jitter(1, 0.5, 0.015, 300, 7))
    assert totals(counter) == (1, 1)  # at most once per direction, even then


def test_a_track_counts_at_most_once_per_direction():
    counter = stage()
    back_and_forth = [*walker(1, (0.3, 0.6), (0.02, 0), 21), *walker(1, (0.7, 0.6), (-0.02, 0), 21)]
    run(counter, back_and_forth * 3)
    assert totals(counter) == (1, 1)


def passing(swap_at: int | None, y2: float = 0.62):
    """Two people walking towards each other across the line, meeting on it at frame 20;
    from ``swap_at`` the tracker gives each the other's id (a swap, not a new track)."""
    a = list(walker(1, (0.3, 0.6), (0.01, 0), 41))
    b = list(walker(2, (0.7, y2), (-0.01, 0), 41))
    if swap_at is not None:
        for i in range(swap_at, 41):
            a[i], b[i] = (2, *a[i][1:]), (1, *b[i][1:])
    return a, b


@pytest.mark.parametrize("swap_at", [None, 16, 17, 18, 20, 22, 24, 8, 32])
def test_two_people_passing_each_other_count_once_each_whatever_the_ids_do(swap_at):
    """Truth: one in, one out. 16..24: the ids swap as the two meet at the line, at 16 while
    they are on opposite sides beyond the band; 8 and 32: before and after the line."""
    counter = stage()
    run(counter, *passing(swap_at))
    assert totals(counter) == (1, 1)


def test_without_the_swap_check_an_id_switch_would_add_crossings(monkeypatch):
    monkeypatch.setattr(id_swaps, "SWAP_GAIN", 0.0)
    counter = stage()
    run(counter, *passing(16))
    assert totals(counter) == (2, 2)  # each id "crossed" both ways
    lost = stage()
    monkeypatch.setattr(id_swaps, "SWAP_GAIN", 0.0)
    run(lost, *passing(20))
    assert totals(lost) == (0, 0)  # each id turned back on the line


def test_two_objects_crossing_side_by_side_are_not_taken_for_a_swap():
    counter = stage()
    a = walker(1, (0.3, 0.55), (0.02, 0), 21)
    b = walker(2, (0.3, 0.65), (0.02, 0), 21)
    run(counter, a, b)
    assert totals(counter) == (2, 0)


@pytest.mark.parametrize("x_line", [0.98, 0.99, 0.995])
@pytest.mark.parametrize("speed", [0.015, 0.04])  # at 0.04 it is gone a frame after crossing
def test_a_line_near_the_frame_edge_counts_objects_leaving_and_entering(x_line, speed):
    """supervision #1838: the box is clipped as it leaves, so its anchor never gets a band's
    width beyond a line 1-2% from the edge; the edge rules count it anyway."""
    counter = stage(start=[x_line, 1.0], end=[x_line, 0.0])
    run(counter, walker(1, (0.6, 0.6), (speed, 0), 40))  # walks out through the right edge
    assert totals(counter) == (1, 0)
    run(counter, walker(2, (1.06, 0.6), (-speed, 0), 40), start=40)  # walks in from there
    assert totals(counter) == (1, 1)


def test_a_line_near_the_bottom_edge_counts_objects_walking_out_of_the_frame():
    counter = stage(start=[0.0, 0.98], end=[1.0, 0.98], in_side="left")  # in = above
    run(counter, walker(1, (0.5, 0.5), (0, 0.03), 40))
    assert totals(counter) == (0, 1)


def test_standing_at_the_frame_edge_on_an_edge_line_counts_nothing():
    """The edge rule needs the anchor past the line and the box at the edge beyond it."""
    counter = stage(start=[0.98, 1.0], end=[0.98, 0.0])
    stand = [(1, (0.90 + dx, 0.3, 1.0, 0.6), 0) for dx in np.tile([0.0, 0.01], 100)]
    run(counter, stand)  # centre 0.95-0.955: never past the line
    assert totals(counter) == (0, 0)


def test_passing_beside_the_segment_is_not_a_crossing():
    counter = stage(start=[0.5, 0.6], end=[0.5, 0.2])
    run(counter, walker(1, (0.2, 0.8), (0.02, 0), 30))  # below the segment's end
    run(counter, walker(2, (0.3, 0.5), (0.02, 0), 20), start=30)  # through it
    assert totals(counter) == (1, 0)


def test_walking_round_the_end_of_the_segment_is_not_a_crossing():
    counter = stage(start=[0.5, 0.6], end=[0.5, 0.2])
    path = [*walker(1, (0.4, 0.5), (0, 0.02), 15), *walker(1, (0.4, 0.8), (0.02, 0), 10)]
    path += list(walker(1, (0.6, 0.8), (0, -0.02), 15))  # down, round the end, up the far side
    run(counter, path)
    assert totals(counter) == (0, 0)


def test_unconfirmed_boxes_and_other_labels_are_not_counted():
    counter = stage(labels=["person"])
    run(counter, walker(-1, (0.2, 0.6), (0.02, 0), 30))  # UNCONFIRMED
    run(counter, walker(7, (0.2, 0.6), (0.02, 0), 30, cls=1), start=30)  # a car
    assert totals(counter) == (0, 0)
    run(counter, walker(8, (0.2, 0.6), (0.02, 0), 30), start=60)
    assert totals(counter) == (1, 0)


def test_a_track_hidden_on_the_line_keeps_its_side():
    path = list(walker(1, (0.3, 0.6), (0.01, 0), 41))
    path[15:25] = [None] * 10  # occluded while crossing
    counter = stage()
    run(counter, path)
    assert totals(counter) == (1, 0)


def test_classifications_pass_through():
    counter = stage()
    r = Result("cam", 0, T0, "m", "classify", LABELS, (W, H), Classifications(np.ones(2)))
    assert counter.process(r, None) is r and not r.publications and not r.overlays


def test_track_state_is_bounded(monkeypatch):
    monkeypatch.setattr("edge_agent.analytics.trackstate.MAX_TRACKS", 50)
    counter = stage()
    many = [[(i, (0.2, 0.3, 0.3, 0.6), 0)] for i in range(1, 400)]  # each id seen once
    for seq, objs in enumerate(many):
        counter.process(result(objs, seq), None)
    assert len(counter.table) <= 50
    short_opts = LinesOptions.model_validate({**short_lines_spec(), "lost_s": 0.55}, strict=True)
    short = LineCounter(short_opts, StageContext("cam", StatsRegistry()))
    for seq, objs in enumerate(many[:100]):
        short.process(result(objs, seq), None)
    assert len(short.table) == 6


def test_track_state_stays_bounded_when_capture_time_goes_back():
    """A looped image folder (``on_eof: loop``): time steps back at each pass, and each
    image shows a new id. Tracks are forgotten ``lost_s`` after they were last seen on a clock
    that does not step back with the frames, so the table holds only the last few."""
    opts = LinesOptions.model_validate({**short_lines_spec(), "lost_s": 0.55}, strict=True)
    counter = LineCounter(opts, StageContext("cam", StatsRegistry()))
    sizes = []
    for n in range(20):
        for i in range(10):
            r = result([(n * 10 + i + 1, (0.2, 0.3, 0.3, 0.6), 0)], i)  # ts back to T0 each pass
            r.seq = n * 10 + i
            counter.process(r, None)
            sizes.append(len(counter.table))
    # seen now or within the last 0.55 s: six, as without the steps back; seven just after a
    # step, which takes no time (its two frames are 0 s apart, not 0.1 s)
    assert max(sizes) == 7 and sizes[-1] == 6


def short_lines_spec() -> dict:
    return {"lines": [{"name": "a", "start": [0.5, 0], "end": [0.5, 1], "in_side": "left"}]}


def test_totals_and_tallies_survive_a_restart(tmp_path):
    counter = stage(tmp_path)
    run(counter, walker(1, (0.2, 0.6), (0.02, 0), 30))
    counter.close()
    saved = json.loads((tmp_path / "lines" / "door.json").read_text())
    assert saved["labels"] == {"person": [1, 0]}
    again = stage(tmp_path)
    out = run(again, walker(1, (0.8, 0.6), (-0.02, 0), 30), start=100)
    body = last_line(out)
    assert (body["in"], body["out"]) == (1, 1) and body["since"] == T0
    assert body["hour"]["in"] == 1 and body["hour"]["out"] == 1
    first = out[0].publications[0].payload
    assert isinstance(first, dict) and (first["in"], first["out"]) == (1, 0)  # restored, retained


def test_tallies_are_saved_every_few_seconds_not_every_frame(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(tallies_module.time, "monotonic", lambda: clock[0])
    counter = stage(tmp_path)
    path = tmp_path / "lines" / "door.json"
    run(counter, walker(1, (0.2, 0.6), (0.02, 0), 30))
    assert not path.exists()
    clock[0] = tallies_module.SAVE_INTERVAL_S
    run(counter, [(9, (0.1, 0.1, 0.2, 0.2), 0)], start=30)
    assert json.loads(path.read_text())["labels"] == {"person": [1, 0]}


def test_tallies_are_saved_when_the_source_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(tallies_module.time, "monotonic", lambda: 0.0)  # the clock stands still
    counter = stage(tmp_path)
    chain = StageChain("cam", [counter], StatsRegistry())
    for seq, obj in enumerate(walker(1, (0.2, 0.6), (0.02, 0), 30)):
        chain.process(result([obj], seq), None)
    assert not (tmp_path / "lines" / "door.json").exists()  # not yet: every few seconds
    chain.finish()
    assert json.loads((tmp_path / "lines" / "door.json").read_text())["labels"] == {
        "person": [1, 0]
    }


def test_a_damaged_tally_file_is_moved_aside_and_counting_goes_on(tmp_path, caplog):
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "door.json").write_text('{"version": 1, "since": ')
    with caplog.at_level(logging.ERROR):
        counter = stage(tmp_path)
    assert (
        "door.json cannot be read" in caplog.text and "moved to door.json.damaged-" in caplog.text
    )
    assert [p.name.startswith("door.json.damaged-") for p in (tmp_path / "lines").iterdir()] == [
        True
    ]
    run(counter, walker(1, (0.2, 0.6), (0.02, 0), 30))
    assert totals(counter) == (1, 0)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ({"end": [0.5, 0.995]}, "end must be at least 0.01 from start, but the line is 0.005 long"),
        (
            {"end": [0.5, 1.2]},
            "a point is [x, y], each from 0 to 1 (normalised), but got [0.5, 1.2]",
        ),
        ({"name": "front door"}, "character ' ' at position 6 is not allowed"),
        ({"in_side": "up"}, "'left' or 'right'"),
        ({"hysteresis": -0.1}, "greater than or equal to 0"),
        ({"periods": ["hour", "hour"]}, "each period may appear once"),
        ({"periods": ["week"]}, "'hour' or 'day'"),
    ],
)
def test_bad_lines_are_refused_naming_the_field(line, error):
    spec = {"name": "door", "start": [0.5, 1.0], "end": [0.5, 0.0], "in_side": "right", **line}
    with pytest.raises(ValidationError) as info:
        LinesOptions.model_validate({"lines": [spec]}, strict=True)
    assert error in str(info.value)
    key = next(iter(line))
    assert info.value.errors()[0]["loc"][:3] == ("lines", 0, key)


def test_line_names_unique_and_labels_named_for_the_model_check():
    spec = {"name": "door", "start": [0.5, 1.0], "end": [0.5, 0.0], "in_side": "right"}
    with pytest.raises(ValidationError, match="line names must be unique, but 'door' appears"):
        LinesOptions.model_validate({"lines": [spec, spec]}, strict=True)
    opts = LinesOptions.model_validate(
        {"lines": [spec, {**spec, "name": "b", "labels": ["cat", "dog"]}]}
    )
    assert opts.labels_named() == [
        (("lines", 1, "labels", 0), "cat"),
        (("lines", 1, "labels", 1), "dog"),
    ]


def test_config_errors_name_the_yaml_line():
    text = (
        "model:\n  bundle: b\nsources:\n  - id: cam\n    uri: clip.mp4\n    stages:\n"
        "      - type: lines\n        lines:\n          - name: door\n"
        "            start: [0.5, 0.5]\n            end: [0.5, 0.5]\n            in_side: left\n"
        "mqtt:\n  host: broker\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/etc/edgesight/agent.yaml"))
    assert [str(i) for i in info.value.issues] == [
        "line 11: sources[0].stages[0].lines[0].end: "
        "end must be at least 0.01 from start, but the line is 0 long"
    ]


def test_a_label_the_model_lacks_is_named_with_its_yaml_line():
    """The lead's model check (config/labels.py) reads labels_named(): a typo in a zone's or a
    line's labels is reported at the line of that very label."""
    text = (
        "model:\n  bundle: b\nsources:\n  - id: cam\n    uri: clip.mp4\n    stages:\n"
        "      - type: track\n"
        "      - type: zones\n        zones:\n          - name: desk\n"
        "            polygon: [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\n"
        "            labels: [person, persn]\n"
        "      - type: lines\n        lines:\n          - name: door\n"
        "            start: [0.5, 1.0]\n            end: [0.5, 0.0]\n            in_side: left\n"
        "            labels:\n              - car\n              - bycicle\n"
        "mqtt:\n  host: broker\n"
    )
    loaded = read_config_text(text, Path("/etc/edgesight/agent.yaml"))
    problems = label_problems(loaded.config, ["person", "car", "bicycle"])
    assert [(loaded.line_of(*loc), loc[-4:]) for loc, _ in problems] == [
        (12, ("zones", 0, "labels", 1)),
        (21, ("lines", 0, "labels", 1)),
    ]
    assert (
        "label 'bycicle' is not one of the model's labels (did you mean 'bicycle'?)"
        in (problems[1][1])
    )


def test_behind_the_real_tracker_two_people_passing_count_one_each_way():
    """The chain as configured: track -> lines -> zones, on boxes without ids."""
    specs = [
        ("track", stage_options("track", {})),
        ("lines", stage_options("lines", {"lines": [{"name": "door", "start": [0.5, 1.0],
                                                     "end": [0.5, 0.0], "in_side": "right"}]})),
        ("zones", stage_options("zones", {"zones": [{"name": "right", "polygon": [
            [0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}]})),
    ]  # fmt: skip
    chain = build_chain("cam", specs, StatsRegistry(), labels=LABELS)
    out = []
    for seq, (a, b) in enumerate(zip(*passing(None), strict=True)):
        r = result([a, b], seq)
        r.predictions.tracker_id = None  # type: ignore[union-attr]
        out.append(chain.process(r, None))
    body = last_line(out)
    assert (body["in"], body["out"]) == (1, 1)
    zone = [p.payload for r in out for p in r.publications if p.kind == "zone"][-1]
    assert isinstance(zone, dict)  # one walked out of the right half, the other into it
    assert (zone["count"], zone["entries"], zone["exits"]) == (1, 2, 1)
