"""The zones stage: entries after ``inertia`` frames, exits likewise, exact counts and dwell
times, occlusions that do not end a visit, loitering events, and the options' checks.

Scenes are scripted with known tracker ids and foot positions, so every count and dwell time
below is computed by hand from the scene; a random scene is also checked against a plain
per-track restatement of the documented rule.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.analytics.zone_options import ZonesOptions
from edge_agent.analytics.zones import ZoneCounter
from edge_agent.config import ConfigError, parse_config
from edge_agent.geometry import anchor_points, points_in_polygon
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, stage_options, stage_types
from edge_agent.types import Classifications, Detections, Result

W, H = 640, 480
LABELS = ["person", "car"]
FPS = 10.0
T0 = 1_700_000_000.0
SQUARE = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.9], [0.4, 0.9]]

Obj = tuple[int, float, float, int]  # (track id, foot x, foot y, class)


def ts(seq: int) -> float:
    return T0 + seq / FPS


def result(objs: list[Obj], seq: int) -> Result:
    """Boxes 0.1 wide and 0.3 tall standing on each object's foot point."""
    xyxy = np.array([[x - 0.05, y - 0.3, x + 0.05, y] for _, x, y, _ in objs], np.float32)
    det = Detections(
        xyxy=xyxy.reshape(-1, 4) * [W, H, W, H],
        confidence=np.full(len(objs), 0.9, np.float32),
        class_id=np.array([c for *_, c in objs], np.int32),
        tracker_id=np.array([t for t, *_ in objs], np.int64),
    )
    return Result("cam", seq, ts(seq), "m", "detect", LABELS, (W, H), det)


def stage(*zones: dict, lost_s: float = 3.0) -> ZoneCounter:
    zones = zones or ({"name": "desk", "polygon": SQUARE},)
    opts = stage_options("zones", {"zones": list(zones), "lost_s": lost_s})
    assert isinstance(opts, ZonesOptions)
    return ZoneCounter(opts, StageContext("cam", StatsRegistry(), tuple(LABELS)))


def run(counter: ZoneCounter, frames: list[list[Obj]], start: int = 0) -> list[Result]:
    return [counter.process(result(objs, start + i), None) for i, objs in enumerate(frames)]


def zone_msgs(results: list[Result], level: tuple[str, str] = ("desk", "person")) -> list[dict]:
    """(seq, payload) of every zone publication on that topic, in order."""
    return [
        {"seq": r.seq, **p.payload}
        for r in results
        for p in r.publications
        if p.kind == "zone" and p.levels == level and isinstance(p.payload, dict)
    ]


def walk(tid: int, x0: float, dx: float, n: int, y: float = 0.6, cls: int = 0) -> list[Obj]:
    return [(tid, x0 + dx * i, y, cls) for i in range(n)]


def test_registered_after_track():
    assert stage_types()["zones"].requires == ("track",)


def test_entry_and_exit_after_inertia_with_exact_dwell():
    """Feet at x = 0.21 + 0.02 i: inside the square for i = 10..19, outside from 20."""
    out = run(stage(), [[o] for o in walk(1, 0.21, 0.02, 30)])
    msgs = zone_msgs(out)
    assert [m["seq"] for m in msgs] == [0, 12, 22]  # first frame, then inertia 3 each way
    assert [m["count"] for m in msgs] == [0, 1, 0]
    assert msgs[1]["current_since"] == ts(10)  # the visit began on the first frame inside
    assert msgs[2] == {
        "seq": 22,
        "count": 0,
        "entries": 1,
        "exits": 1,
        "current_since": None,
        "dwell_s": {"mean": 1.0, "max": 1.0},  # ts(20) - ts(10): from first in to first out
        "since": T0,
        "ts": ts(22),
    }


def test_a_box_flickering_on_the_border_never_enters():
    flicker = [[(1, 0.39 if i % 2 else 0.41, 0.6, 0)] for i in range(100)]
    counter = stage()
    assert [m["count"] for m in zone_msgs(run(counter, flicker))] == [0]
    quick = stage({"name": "desk", "polygon": SQUARE, "inertia": 1})  # the control
    assert len(zone_msgs(run(quick, flicker))) == 100  # in, out, in, ... every frame


def test_leaving_and_re_entering_counts_two_visits():
    path = walk(1, 0.21, 0.02, 30) + walk(1, 0.79, -0.02, 30)  # in at 10, out 20, in 39, out 49
    msgs = zone_msgs(run(stage(), [[o] for o in path]))
    assert [(m["count"], m["entries"], m["exits"]) for m in msgs] == [
        (0, 0, 0),
        (1, 1, 0),
        (0, 1, 1),
        (1, 2, 1),
        (0, 2, 2),
    ]
    assert msgs[-1]["dwell_s"] == {"mean": 1.0, "max": 1.0}


def test_an_occluded_track_keeps_its_place_then_exits_when_last_seen():
    stay = [[(1, 0.5, 0.6, 0)]] * 20
    frames = stay + [[]] * 25 + stay + [[]] * 40  # hidden 2.5 s (< 2.95), then gone
    msgs = zone_msgs(run(stage(lost_s=2.95), frames))
    assert [(m["seq"], m["count"], m["entries"], m["exits"]) for m in msgs] == [
        (0, 0, 0, 0),
        (2, 1, 1, 0),
        (64 + 30, 0, 1, 1),  # 3.0 s after it was last seen (frame 64)
    ]
    assert msgs[-1]["dwell_s"]["max"] == pytest.approx(ts(64) - ts(0))


#: One pass over a looped image folder (``on_eof: loop``): a person walks into the desk zone
#: and is inside at the last image; the next pass starts again at the first image's time.
LOOP_FEET = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 0.5, 0.52, 0.55]


def looped(counter: ZoneCounter, passes: int) -> list[Result]:
    """The folder played ``passes`` times; the tracker gives each pass's person a new id (the
    box jumps from the last image's place to the first's), as it would."""
    out = []
    for n in range(passes):
        for i, x in enumerate(LOOP_FEET):
            r = result([(n + 1, x, 0.6, 0)], i)  # capture time ts(i): back to ts(0) each pass
            r.seq = n * len(LOOP_FEET) + i
            out.append(counter.process(r, None))
    return out


def test_a_looped_folder_keeps_the_count_exact():
    """Capture time goes back at each pass. The last pass's person is forgotten ``lost_s``
    after it was last seen, counted on a clock that does not go back with the frames."""
    counter = stage({"name": "desk", "polygon": SQUARE, "inertia": 1}, lost_s=0.25)
    out = looped(counter, 4)
    msgs = zone_msgs(out)
    assert max(m["count"] for m in msgs) == 1  # the folder never shows more than one person
    assert all(m["count"] == m["entries"] - m["exits"] for m in msgs)
    per_pass = [zone_msgs(out[n * 10 : n * 10 + 10])[-1] for n in range(4)]
    assert [(m["count"], m["entries"], m["exits"]) for m in per_pass] == [
        (1, 1, 0),
        (1, 2, 1),
        (1, 3, 2),
        (1, 4, 3),
    ]
    # each visit lasted from image 6 to image 9 (0.3 s), not a negative or a pass-long time
    assert per_pass[-1]["dwell_s"] == {"mean": 0.3, "max": 0.3}
    assert per_pass[-1]["current_since"] == ts(6)  # on the frames' timeline
    exits = [b["seq"] for a, b in itertools.pairwise(msgs) if b["exits"] > a["exits"]]
    assert [seq % 10 for seq in exits] == [3, 3, 3]  # 0.3 s (> lost_s) after the last sighting


def test_loitering_counts_time_across_a_clock_step_back():
    """A person standing in the zone through a looped folder of 1 s images: the step back
    counts as no time, so 15 s inside (9 before it) are reached at the 7th image of the second
    pass; the visit's start moves back with the clock, so ``ts - start == dwell_s``."""
    counter = stage({"name": "desk", "polygon": SQUARE, "loiter_s": 15.0, "inertia": 1})
    stay = [(7, 0.5, 0.6, 0)]
    out = []
    for seq in range(30):
        r = result(stay, 0)
        r.seq, r.ts = seq, T0 + seq % 10  # 0..9 s, three times
        out.append(counter.process(r, None))
    events = [(r, p.payload) for r in out for p in r.publications if p.kind == "event"]
    assert [r.seq for r, _ in events] == [16]
    event = events[0][1]
    assert isinstance(event, dict)
    assert event["dwell_s"] == 15.0 and event["ts"] == T0 + 6
    assert event["ts"] - event["start"] == 15.0


def test_counts_per_label_and_the_zone_labels_filter():
    both = stage(
        {"name": "desk", "polygon": SQUARE},
        {"name": "bay", "polygon": SQUARE, "labels": ["car"]},
    )
    frames = [[(1, 0.5, 0.6, 0), (2, 0.45, 0.7, 1), (3, 0.55, 0.8, 0)]] * 5
    out = run(both, frames)
    assert zone_msgs(out, ("desk", "person"))[-1]["count"] == 2
    assert zone_msgs(out, ("desk", "car"))[-1]["count"] == 1
    assert zone_msgs(out, ("bay", "car"))[-1]["count"] == 1
    assert not zone_msgs(out, ("bay", "person"))  # not counted there, not published
    levels = {p.levels for p in out[0].publications}
    assert levels == {("desk", "person"), ("desk", "car"), ("bay", "car")}  # all at start
    assert not out[1].publications and not out[3].publications  # only when something changed
    captions = {o.name: o.caption for o in out[-1].overlays}
    assert captions == {"desk": "person 2, car 1", "bay": "car 1"}
    assert {o.name: o.caption for o in out[0].overlays} == {"desk": "empty", "bay": "empty"}


def test_a_class_change_inside_keeps_the_visit_under_its_entry_label():
    frames = [[(1, 0.5, 0.6, 0)]] * 5 + [[(1, 0.5, 0.6, 1)]] * 5 + [[(1, 0.8, 0.6, 1)]] * 5
    out = run(stage(), frames)
    person = zone_msgs(out)
    assert [(m["seq"], m["count"], m["entries"], m["exits"]) for m in person] == [
        (0, 0, 0, 0),
        (2, 1, 1, 0),
        (12, 0, 1, 1),  # left as a car, but the visit began as a person
    ]
    assert [m["entries"] for m in zone_msgs(out, ("desk", "car"))] == [0]


def test_anchor_decides_membership():
    """Feet at y 0.95 (below the square), centre at 0.8 (inside)."""
    frames = [[(1, 0.5, 0.95, 0)]] * 5
    feet = zone_msgs(run(stage(), frames))
    centre = zone_msgs(run(stage({"name": "desk", "polygon": SQUARE, "anchor": "center"}), frames))
    assert (feet[-1]["count"], centre[-1]["count"]) == (0, 1)


def test_membership_goes_into_the_detections_for_later_stages():
    counter = stage(
        {"name": "desk", "polygon": SQUARE, "inertia": 1},
        {"name": "left", "polygon": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]},
    )
    out = run(counter, [[(1, 0.45, 0.6, 0), (-1, 0.45, 0.6, 0), (2, 0.9, 0.6, 0)]] * 3)
    zones = out[-1].predictions.data["zones"]  # type: ignore[union-attr]
    assert zones.dtype == bool and zones.tolist() == [[True, True], [False, False], [False, False]]


def test_loitering_fires_once_per_visit_with_a_snapshot_request():
    counter = stage({"name": "desk", "polygon": SQUARE, "loiter_s": 2.0})
    stay = [[(7, 0.5, 0.6, 0)]] * 40
    out = run(counter, stay + [[(7, 0.8, 0.6, 0)]] * 5 + stay)
    events = [(r, p.payload) for r in out for p in r.publications if p.kind == "event"]
    assert [r.seq for r, _ in events] == [20, 45 + 20]  # 2.0 s after each visit began
    first = events[0][1]
    assert isinstance(first, dict)
    assert {k: v for k, v in first.items() if k != "id"} == {
        "type": "loitering",
        "zone": "desk",
        "label": "person",
        "track_id": 7,
        "start": ts(0),
        "dwell_s": 2.0,
        "loiter_s": 2.0,
        "ts": ts(20),
        "snapshot": None,
    }
    ids = {e["id"] for _, e in events}  # type: ignore[index]
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    request = events[0][0].snapshot_requests[0]
    assert request.reason == "loitering" and request.event is first and request.ts == ts(20)


def test_classifications_and_untracked_boxes_pass_through():
    counter = stage()
    r = Result("cam", 0, T0, "m", "classify", LABELS, (W, H), Classifications(np.ones(2)))
    assert counter.process(r, None) is r and not r.publications
    untracked = result([(1, 0.5, 0.6, 0)], 0)
    untracked.predictions.tracker_id = None  # type: ignore[union-attr]
    assert not counter.process(untracked, None).publications


def test_track_state_is_bounded(monkeypatch):
    monkeypatch.setattr("edge_agent.analytics.trackstate.MAX_TRACKS", 20)
    counter = stage(lost_s=1000.0)
    out = run(counter, [[(i, 0.5, 0.6, 0)] for i in range(1, 200)])
    assert len(counter.table) <= 20
    last = zone_msgs(out)[-1]
    assert last["count"] == last["entries"] - last["exits"] >= 0


def reference(frames: list[list[Obj]], polygon: list, inertia: int, lost: int) -> list[tuple]:
    """The documented rule, one track at a time: (entries, exits) after each frame (``lost``
    in frames: the stage is given the same in seconds)."""
    state: dict[int, dict] = {}
    entries = exits = 0
    history = []
    for seq, objs in enumerate(frames):
        for tid, x, y, _ in objs:
            s = state.setdefault(tid, {"inside": False, "streak": 0})
            box = np.array([[x - 0.05, y - 0.3, x + 0.05, y]], np.float32) * [W, H, W, H]
            point = anchor_points(box, "bottom_center") / [W, H]
            geo = bool(points_in_polygon(point, np.array(polygon))[0])
            s["streak"] = s["streak"] + 1 if geo != s["inside"] else 0
            if s["streak"] >= inertia:
                entries, exits = entries + (not s["inside"]), exits + s["inside"]
                s["inside"], s["streak"] = geo, 0
            s["seen"] = seq
        for tid in [t for t, s in state.items() if seq - s["seen"] > lost]:
            exits += state.pop(tid)["inside"]
        history.append((entries, exits))
    return history


@pytest.mark.parametrize("seed", range(6))
def test_random_scenes_match_the_rule_restated_per_track(seed):
    rng = np.random.default_rng(seed)
    n_frames, n_tracks = 300, 12
    pos = rng.uniform(0.2, 0.8, (n_tracks, 2))
    frames = []
    for _ in range(n_frames):
        pos = np.clip(pos + rng.normal(0, 0.03, pos.shape), 0.05, 0.95)
        seen = rng.random(n_tracks) > 0.2  # missed one frame in five
        alive = np.arange(n_tracks) < n_tracks * (0.5 + 0.5 * rng.random())
        frames.append([(t + 1, *pos[t], 0) for t in np.flatnonzero(seen & alive)])
    inertia, lost = int(rng.integers(1, 5)), int(rng.integers(0, 10))
    counter = stage(
        {"name": "desk", "polygon": SQUARE, "inertia": inertia}, lost_s=(lost + 0.5) / FPS
    )
    out = run(counter, frames)
    expected = reference(frames, SQUARE, inertia, lost)
    got, state = [], (0, 0)
    for r in out:
        for m in zone_msgs([r]):
            state = (m["entries"], m["exits"])
        got.append(state)
    assert got == expected
    assert expected[-1][0] >= 3  # the scene does exercise the rule


def zone_error(zone: dict) -> str:
    with pytest.raises(ValidationError) as info:
        ZonesOptions.model_validate(
            {"zones": [{"name": "desk", "polygon": SQUARE, **zone}]}, strict=True
        )
    return str(info.value)


@pytest.mark.parametrize(
    ("zone", "error"),
    [
        ({"polygon": [[0.1, 0.1], [0.5, 0.5]]}, "polygon needs 3 to 64 points [x, y], but got 2"),
        ({"polygon": [[0.1, 0.1], [0.3, 0.3], [0.5, 0.5]]}, "polygon encloses no area (0 of"),
        ({"polygon": [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.7]]}, "edges 0-1 and 2-3 cross"),
        ({"polygon": [[0.1, 0.1], [0.5, 1.5], [0.5, 0.1]]}, "a point is [x, y], each from 0 to 1"),
        ({"polygon": [[0.1, 0.1], [0.5], [0.5, 0.1]]}, "a point is [x, y], each from 0 to 1"),
        ({"name": "desk/1"}, "character '/' at position 5 is not allowed in 'desk/1'"),
        ({"anchor": "feet"}, "'bottom_center'"),
        ({"inertia": 0}, "greater than or equal to 1"),
        ({"labels": []}, "at least 1 item"),
        ({"loiter_s": 0}, "greater than 0"),
    ],
)
def test_bad_zones_are_refused_naming_the_field(zone, error):
    assert error in zone_error(zone)
    assert f"zones.0.{next(iter(zone))}" in zone_error(zone)


def test_zone_names_unique_and_labels_named_for_the_model_check():
    desk = {"name": "desk", "polygon": SQUARE}
    with pytest.raises(ValidationError, match="zone names must be unique, but 'desk' appears"):
        ZonesOptions.model_validate({"zones": [desk, desk]}, strict=True)
    opts = ZonesOptions.model_validate(
        {"zones": [desk, {**desk, "name": "b", "labels": ["cat"]}]}, strict=True
    )
    assert opts.labels_named() == [(("zones", 1, "labels", 0), "cat")]


def test_config_errors_name_the_yaml_line():
    text = (
        "model:\n  bundle: b\nsources:\n  - id: cam\n    uri: clip.mp4\n    stages:\n"
        "      - type: zones\n        zones:\n          - name: desk\n"
        "            polygon: [[0.1, 0.1], [0.5, 0.5]]\n"
        "mqtt:\n  host: broker\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/etc/edgesight/agent.yaml"))
    assert [str(i) for i in info.value.issues] == [
        "line 10: sources[0].stages[0].zones[0].polygon: "
        "polygon needs 3 to 64 points [x, y], but got 2"
    ]


def test_a_model_swap_republishes_every_zone_and_label():
    counter = stage()
    run(counter, [[(1, 0.5, 0.6, 0)]] * 4)  # a person enters the desk
    swapped = result([(1, 0.5, 0.6, 0)], 4)
    swapped.labels = ["dog", "person"]  # the new model's labels; class 0 is now a dog
    counter.process(swapped, None)
    levels = {p.levels: p.payload for p in swapped.publications if isinstance(p.payload, dict)}
    assert set(levels) == {("desk", "dog"), ("desk", "person")}
    assert levels[("desk", "person")]["count"] == 1  # the visit goes on under its label
