"""Shelf slots: per-frame counts in polygons, the debounce a hand in front of the shelf cannot
move, low_stock / out_of_stock / restocked events, retained states that survive a restart.

Scenes are scripted frame by frame in capture time (10 fps), so every expectation is exact."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_agent.analytics.slot_level import SlotLevel
from edge_agent.analytics.slot_options import SlotsOptions, SlotSpec
from edge_agent.analytics.slots import build_slots, event_type
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, order_problem, stage_options, stage_types
from edge_agent.types import (
    UNCONFIRMED,
    Classifications,
    Detections,
    Overlay,
    Result,
    SnapshotRequest,
)

LABELS = ["cola", "water", "hand"]
SIZE = (640, 480)
FPS = 10
#: The cola slot covers the left half of the shelf row, the water slot the right half.
COLA = {"name": "cola", "polygon": [[0, 0.4], [0.5, 0.4], [0.5, 0.6], [0, 0.6]], "label": "cola"}
WATER = {"name": "water", "polygon": [[0.5, 0.4], [1, 0.4], [1, 0.6], [0.5, 0.6]]}
#: Cola is low at 2 of 6 or fewer; water at 1 of 4 (the default, a quarter).
OPTIONS = {
    "slots": [
        {**COLA, "capacity": 6, "low_at": 0.34},
        {**WATER, "label": "water", "capacity": 4},
    ]
}


def cans(n: int, label: str = "cola", x0: float = 20) -> list[tuple[str, float, float]]:
    """``n`` items standing side by side on the shelf row (y 240), from x0 to the right."""
    return [(label, x0 + 40 * k, 240.0) for k in range(n)]


def make_result(
    ts: float, items: list[tuple[str, float, float]], tracker_id: list[int] | None = None
) -> Result:
    """One frame whose boxes (30 x 50 px) are centred on the given points."""
    xyxy = [[x - 15, y - 25, x + 15, y + 25] for _, x, y in items]
    detections = Detections(
        xyxy=np.array(xyxy, np.float32).reshape(-1, 4),
        confidence=np.full(len(items), 0.9, np.float32),
        class_id=np.array([LABELS.index(label) for label, _, _ in items], np.int32),
        tracker_id=None if tracker_id is None else np.array(tracker_id, np.int64),
    )
    seq = round(ts * FPS)
    return Result("shelf", seq, ts, "m", "detect", list(LABELS), SIZE, detections)


def make_stage(options: dict[str, Any] = OPTIONS, state_dir: Path | None = None) -> Any:
    validated = stage_options("slots", options)
    assert isinstance(validated, SlotsOptions)
    return build_slots(validated, StageContext("shelf", StatsRegistry(), tuple(LABELS), state_dir))


class Run:
    """Feeds a stage frame by frame and keeps what it published, by capture time."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage
        self.ts = 0.0
        self.slots: list[tuple[float, str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.requests: list[SnapshotRequest] = []
        self.last: Result | None = None

    def hold(self, seconds: float, items: list[tuple[str, float, float]]) -> None:
        for _ in range(round(seconds * FPS)):
            result = self.stage.process(make_result(self.ts, items), None)
            for p in result.publications:
                if p.kind == "slot":
                    self.slots.append((self.ts, p.levels[0], p.payload))
                else:
                    assert p.kind == "event" and p.levels == ()
                    self.events.append(p.payload)
            self.requests += result.snapshot_requests
            self.last = result
            self.ts = round(self.ts + 1 / FPS, 6)

    def kinds(self) -> list[tuple[str, str, float]]:
        return [(e["type"], e["slot"], e["ts"]) for e in self.events]


# --- the scene -------------------------------------------------------------------------


def test_a_slot_emptied_briefly_occluded_and_refilled() -> None:
    run = Run(make_stage())
    water = cans(3, "water", x0=360)
    run.hold(8, cans(6) + water)  # full; the state is known after 5 s
    assert [(ts, name, p["state"], p["count"]) for ts, name, p in run.slots] == [
        (5.0, "cola", "ok", 6),
        (5.0, "water", "ok", 3),
    ]
    run.hold(1.5, [*water, ("hand", 100, 240)])  # t 8: a hand hides every can for 1.5 s
    run.hold(3.5, cans(6) + water)
    assert len(run.slots) == 2 and run.events == []  # the occlusion changed nothing
    run.hold(1, cans(3) + water + [("hand", 200, 240)])  # t 13: a shopper takes some
    run.hold(7, cans(2) + water)  # t 14: two left
    run.hold(7, water)  # t 21: the last two are gone
    run.hold(1.5, [*water, ("hand", 60, 240)])  # t 28: a hand in front of the empty slot
    run.hold(3, water)
    run.hold(1, cans(2) + water + [("hand", 200, 240)])  # t 32.5: restocking, two so far
    run.hold(8, cans(6) + water)  # t 33.5: full

    assert run.kinds() == [
        ("low_stock", "cola", 19.0),  # at most 2 from t 14
        ("out_of_stock", "cola", 26.0),  # none from t 21
        ("restocked", "cola", 38.5),  # six from t 33.5
    ]
    low, out, restocked = run.events
    assert low == {
        "type": "low_stock",
        "id": low["id"],
        "slot": "cola",
        "label": "cola",
        "count": 2,
        "capacity": 6,
        "fill": 0.333,
        "ts": 19.0,
        "snapshot": None,
    }
    assert (out["count"], out["fill"], restocked["count"], restocked["fill"]) == (0, 0.0, 6, 1.0)
    assert len({e["id"] for e in run.events}) == 3
    cola = [(ts, p["count"], p["state"], p["since"]) for ts, name, p in run.slots if name == "cola"]
    assert cola == [
        (5.0, 6, "ok", 5.0),
        (18.0, 3, "ok", 5.0),  # nothing above 3 from t 13 (the shopper's second)
        (19.0, 2, "low", 19.0),
        (26.0, 0, "out", 26.0),
        (37.5, 2, "low", 37.5),  # out -> low fires nothing: the alert is still open
        (38.5, 6, "ok", 38.5),
    ]
    assert all(name == "cola" for _, name, _ in run.slots[2:])  # water never changed
    assert run.slots[-1][2] == {
        "label": "cola",
        "count": 6,
        "capacity": 6,
        "fill": 1.0,
        "state": "ok",
        "since": 38.5,
        "ts": 38.5,
    }
    # Each event asks the snapshot stage for this frame, with the published dict itself.
    assert [(r.reason, r.ts, r.image) for r in run.requests] == [
        (e["type"], e["ts"], None) for e in run.events
    ]
    assert all(r.event is e for r, e in zip(run.requests, run.events, strict=True))


# --- what a frame counts ----------------------------------------------------------------------

ONLY_COLA = {"slots": [{**COLA, "capacity": 6}]}
INSTANT = {
    "slots": [
        {**COLA, "capacity": 6, "debounce_s": 0},
        {**WATER, "label": "water", "capacity": 4, "debounce_s": 0},
    ]
}


def counted(stage: Any, items: list[tuple[str, float, float]], ts: float = 0.0) -> dict[str, int]:
    """The slots' counts after one frame (debounce 0: every frame commits)."""
    stage.process(make_result(ts, items), None)
    return {s.spec.name: s.level.count for s in stage.slots}


def test_a_slot_counts_boxes_of_its_label_whose_anchor_is_inside() -> None:
    stage = make_stage(INSTANT)
    items = [
        ("cola", 100, 240),  # in the cola slot
        ("cola", 319, 240),  # centre 1 px inside the cola slot
        ("cola", 320, 240),  # centre on the shared edge: in both polygons, counted by cola
        ("water", 150, 240),  # water in the cola slot: counted by neither
        ("cola", 400, 240),  # cola in the water slot: counted by neither
        ("cola", 100, 180),  # above the shelf row (y 192): the box overlaps, its centre not
        ("water", 500, 240),
        ("hand", 200, 240),
    ]
    assert counted(stage, items) == {"cola": 3, "water": 1}
    assert counted(stage, [], ts=0.1) == {"cola": 0, "water": 0}


def test_anchor_chooses_the_point_of_the_box() -> None:
    bottom = {"slots": [{**COLA, "capacity": 6, "debounce_s": 0, "anchor": "bottom_center"}]}
    # Centre at y 180 (outside), bottom at y 205 (inside the row 192..288).
    assert counted(make_stage(bottom), [("cola", 100, 180)]) == {"cola": 1}
    assert counted(make_stage(INSTANT), [("cola", 100, 180)])["cola"] == 0


def test_tracking_changes_nothing_unconfirmed_boxes_count_too() -> None:
    items = cans(4)
    plain = make_stage(INSTANT).process(make_result(0.0, items), None)
    tracked = make_stage(INSTANT).process(
        make_result(0.0, items, tracker_id=[7, UNCONFIRMED, 9, UNCONFIRMED]), None
    )

    def without_ids(result: Result) -> list[Any]:
        return [{**p.payload, "id": None} for p in result.publications]  # type: ignore[dict-item]

    assert without_ids(plain) == without_ids(tracked)
    assert plain.publications[0].payload["count"] == 4


def test_overlays_show_each_slot_with_its_count_and_state() -> None:
    run = Run(make_stage())
    run.hold(0.1, cans(2))
    assert run.last is not None
    assert run.last.overlays == [
        Overlay("zone", "cola", ((0, 0.4), (0.5, 0.4), (0.5, 0.6), (0, 0.6)), "cola ?/6"),
        Overlay("zone", "water", ((0.5, 0.4), (1, 0.4), (1, 0.6), (0.5, 0.6)), "water ?/4"),
    ]
    run.hold(5, cans(2))
    assert [o.caption for o in run.last.overlays] == ["cola 2/6 low", "water 0/4 out"]
    run.hold(6, cans(7))  # more than the capacity: the count says so, the fill stops at 1
    assert run.last.overlays[0].caption == "cola 7/6"
    assert run.slots[-1][2]["fill"] == 1.0


def test_a_model_without_the_label_holds_the_count(caplog: pytest.LogCaptureFixture) -> None:
    stage = make_stage(ONLY_COLA)
    run = Run(stage)
    run.hold(6, cans(6))
    swapped = Result(
        "shelf", 0, run.ts, "m2", "detect", ["water", "hand"], SIZE, Detections.empty()
    )
    for k in range(100):  # ten seconds of a model that knows no cola: nothing is counted
        swapped.ts = run.ts + k / FPS
        stage.process(swapped, None)
    run.ts += 10
    assert stage.slots[0].level.count == 6
    assert caplog.messages == [
        "the model has no label 'cola': slot 'cola' keeps its last count until a model with "
        "it is loaded"
    ]
    run.hold(4.9, [])  # the cola model again: a whole window is needed before a change
    assert run.events == []
    run.hold(0.2, [])
    assert run.kinds() == [("out_of_stock", "cola", 21.0)]  # 5 s after t 16


def test_a_classifier_counts_nothing_and_breaks_nothing() -> None:
    stage = make_stage()
    result = Result(
        "shelf", 0, 0.0, "m", "classify", list(LABELS), SIZE, Classifications(np.ones(3))
    )
    for k in range(80):
        result.ts = k / FPS
        result = stage.process(result, None)
    assert result.publications == [] and result.snapshot_requests == []
    assert [o.caption for o in result.overlays[-2:]] == ["cola ?/6", "water ?/4"]


# --- the debounce -----------------------------------------------------------------------------


def feed(level: SlotLevel, script: list[tuple[float, int]], t0: float = 0.0) -> list[Any]:
    """Feed (seconds, count) spans at 10 fps; returns (ts, count) at every change."""
    changes, ts = [], t0
    for seconds, n in script:
        for _ in range(round(seconds * FPS)):
            if level.update(ts, n):
                changes.append((ts, level.count))
            ts = round(ts + 1 / FPS, 6)
    return changes


def test_level_is_unknown_until_frames_span_the_debounce_then_the_most_seen() -> None:
    level = SlotLevel(5.0)
    assert feed(level, [(2, 5), (1, 4), (2, 3)]) == []
    assert level.count is None
    assert feed(level, [(0.1, 3)], t0=5.0) == [(5.0, 5)]


@pytest.mark.parametrize(
    ("script", "changes"),
    [
        ([(6, 6), (4.9, 0), (3, 6)], [(5.0, 6)]),  # a dip shorter than the debounce
        ([(6, 6), (2, 0), (0.1, 6), (4, 0)], [(5.0, 6)]),  # one frame back resets the dip
        ([(6, 6), (10, 0)], [(5.0, 6), (11.0, 0)]),  # a drop, after the debounce
        ([(6, 6), (12, 5), (3, 6)], [(5.0, 6), (11.0, 5)]),  # one missing: 5
        ([(6, 2), (1, 4), (10, 6)], [(5.0, 2), (11.0, 4), (12.0, 6)]),  # a rise: the least seen
        ([(6, 6)] + [(0.1, 5), (0.1, 6)] * 40, [(5.0, 6)]),  # flicker under the count
        ([(6, 2)] + [(0.1, 3), (0.1, 2)] * 40, [(5.0, 2)]),  # flicker over it
    ],
)
def test_a_new_level_must_hold_for_the_debounce(script: Any, changes: Any) -> None:
    assert feed(SlotLevel(5.0), script) == changes


def test_after_a_gap_in_the_frames_one_frame_is_not_enough() -> None:
    level = SlotLevel(5.0)
    feed(level, [(6, 6)])
    assert feed(level, [(0.1, 2)], t0=100.0) == []  # the camera stalled for 94 s
    assert feed(level, [(4.9, 2)], t0=100.1) == []  # the last 6 held until t 100
    assert feed(level, [(0.1, 2)], t0=105.0) == [(105.0, 2)]


def test_time_going_back_starts_a_new_window() -> None:
    level = SlotLevel(5.0)
    feed(level, [(6, 6)], t0=50.0)
    assert feed(level, [(4.9, 0)], t0=0.0) == []  # a looping video file
    assert feed(level, [(0.2, 0)], t0=4.9) == [(5.0, 0)]


def test_no_debounce_follows_every_frame() -> None:
    assert feed(SlotLevel(0.0), [(0.1, 3), (0.1, 0), (0.2, 4)]) == [(0.0, 3), (0.1, 0), (0.2, 4)]


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (None, "ok", None),  # a start: nobody was told it was low
        (None, "low", "low_stock"),
        (None, "out", "out_of_stock"),
        ("ok", "low", "low_stock"),
        ("ok", "out", "out_of_stock"),
        ("low", "out", "out_of_stock"),
        ("out", "low", None),  # a partial refill: the alert stays open
        ("low", "ok", "restocked"),
        ("out", "ok", "restocked"),
        ("ok", "ok", None),
        ("low", "low", None),
    ],
)
def test_events_open_on_low_or_out_and_close_on_ok(before: Any, after: Any, kind: Any) -> None:
    assert event_type(before, after) == kind


# --- options ----------------------------------------------------------------------------------


def slot(**overrides: Any) -> dict[str, Any]:
    return {"slots": [{**COLA, "capacity": 6, **overrides}]}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"slots": []}, r"slots: List should have at least 1 item"),
        (slot(name="a b"), r"slots\[0\]\.name: character ' ' at position 2"),
        (slot(name="a/b"), r"character '/' at position 2"),
        ({"slots": [slot()["slots"][0]] * 2}, r"slot names must be unique, but 'cola' appears"),
        (slot(polygon=[[0, 0], [1, 1]]), r"polygon must have at least 3 points, but got 2"),
        (slot(polygon=[[0, 0], [1, 0], [1, 1.5]]), r"point 2 must be \[x, y\] with both in \[0"),
        (slot(polygon=[[0, 0], [0.5, 0.5], [1, 1]]), r"area of at least 1e-06 .* but got 0"),
        (slot(polygon=[[0, 0], [1, 0, 0], [1, 1]]), r"point 1 must be \[x, y\]"),
        (slot(capacity=0), r"capacity: Input should be greater than or equal to 1"),
        (slot(capacity=2.0), r"capacity: Input should be a valid integer"),
        (slot(capacity=True), r"capacity: Input should be a valid integer"),
        (slot(low_at=1.0), r"low_at: Input should be less than 1"),
        (slot(debounce_s=-1), r"debounce_s: Input should be greater than or equal to 0"),
        (slot(debounce_s=7200), r"debounce_s: Input should be less than or equal to 3600"),
        (slot(debounce_s=float("nan")), r"debounce_s: Input should be a finite number"),
        (slot(anchor="middle"), r"anchor: Input should be 'center'"),
        (slot(lowat=0.5), r"lowat: unknown key \(did you mean 'low_at'\?\)"),
        (
            {"slots": [{k: v for k, v in COLA.items() if k != "label"}]},
            r"slots\[0\]\.label: required field is missing",
        ),
    ],
)
def test_bad_options_name_the_field_and_what_was_expected(options: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"stage 'slots': .*" + message):
        stage_options("slots", options)


def test_options_name_their_labels_and_need_no_tracking() -> None:
    options = stage_options("slots", OPTIONS)
    assert isinstance(options, SlotsOptions)
    assert options.labels_named() == [
        (("slots", 0, "label"), "cola"),
        (("slots", 1, "label"), "water"),
    ]
    assert stage_types()["slots"].requires == ()
    assert order_problem(["slots"]) is None
    spec = SlotSpec.model_validate({**COLA, "capacity": 4})  # the defaults
    assert (spec.low_at, spec.anchor, spec.debounce_s, spec.low_count()) == (0.25, "center", 5.0, 1)
    assert [spec.state_of(n) for n in (0, 1, 2, 4, 5)] == ["out", "low", "ok", "ok", "ok"]
    assert SlotSpec.model_validate({**COLA, "capacity": 3, "low_at": 0.34}).low_count() == 1


# --- what a restart remembers -----------------------------------------------------------------


def test_a_restart_neither_repeats_nor_misses_an_alert(tmp_path: Path) -> None:
    first = Run(make_stage(ONLY_COLA, state_dir=tmp_path))
    first.hold(6, cans(6))
    first.hold(6, [])
    assert first.kinds() == [("out_of_stock", "cola", 11.0)]
    saved = json.loads((tmp_path / "slots" / "cola.json").read_text())
    assert (saved["state"], saved["since"], saved["count"]) == ("out", 11.0, 0)

    again = Run(make_stage(ONLY_COLA, state_dir=tmp_path))  # restarted, the slot still empty
    again.ts = 100.0
    again.hold(6, [])
    assert again.events == []  # already told
    assert [(ts, p["state"], p["since"]) for ts, _, p in again.slots] == [
        (105.0, "out", 11.0)  # published again once known, since when it is out
    ]

    refilled = Run(make_stage(ONLY_COLA, state_dir=tmp_path))  # restocked while the agent was down
    refilled.ts = 200.0
    refilled.hold(6, cans(6))
    assert refilled.kinds() == [("restocked", "cola", 205.0)]


def test_without_a_state_folder_a_start_alerts_on_what_it_sees(tmp_path: Path) -> None:
    run = Run(make_stage())
    run.hold(6, cans(1))  # cola 1 of 6: low; water none: out
    assert sorted(run.kinds()) == [("low_stock", "cola", 5.0), ("out_of_stock", "water", 5.0)]


def test_a_state_saved_for_another_capacity_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "slots"
    folder.mkdir()
    resized = {"label": "cola", "capacity": 12, "state": "out", "since": 1.0}
    (folder / "cola.json").write_text(json.dumps(resized))
    run = Run(make_stage(state_dir=tmp_path))
    run.hold(6, cans(6, "water", x0=360))
    assert ("out_of_stock", "cola", 5.0) in run.kinds()  # as if there were no saved state
    assert [p.name for p in folder.iterdir()] == ["cola.json", "water.json"]  # not damaged


@pytest.mark.parametrize(
    "saved",
    [
        "{not json",
        "",
        json.dumps({"label": "cola", "capacity": 6, "state": "empty", "since": 1.0}),
        json.dumps({"label": "cola", "capacity": 6, "state": "out"}),
        json.dumps({"label": "cola", "capacity": 6, "state": "out", "since": "noon"}),
        json.dumps(["out"]),
    ],
)
def test_a_damaged_saved_state_is_moved_aside_and_reported(
    tmp_path: Path, saved: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "slots"
    folder.mkdir()
    (folder / "cola.json").write_text(saved)
    with caplog.at_level(logging.ERROR):
        run = Run(make_stage(state_dir=tmp_path))
        run.hold(6, cans(6, "water", x0=360))
    assert ("out_of_stock", "cola", 5.0) in run.kinds()  # as if there were no saved state
    aside = [p for p in folder.iterdir() if p.name.startswith("cola.json.damaged-")]
    assert len(aside) == 1 and aside[0].read_text() == saved  # kept for a look
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(folder / "cola.json") in errors[0].getMessage()
    assert aside[0].name in errors[0].getMessage()
    assert json.loads((folder / "cola.json").read_text())["state"] == "out"  # saved anew


def test_a_state_that_cannot_be_saved_is_still_published(tmp_path: Path) -> None:
    (tmp_path / "slots").write_text("a file where the folder should be")
    run = Run(make_stage(state_dir=tmp_path))
    run.hold(6, [])
    assert len(run.events) == 2 and len(run.slots) == 2


# --- docs/shelves.md stays true ---------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "shelves.md"


def doc_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


def test_the_guide_example_config_is_valid_and_its_payloads_are_the_stage_s() -> None:
    import edge_agent.analytics.snapshots  # noqa: F401  (registers "snapshot")

    (config,) = doc_blocks("yaml")
    stages = yaml.safe_load(config)["sources"][0]["stages"]
    assert [s["type"] for s in stages] == ["counts", "slots", "snapshot"]
    for stage in stages:
        stage_options(stage.pop("type"), stage)
    slot_doc, event_doc = (json.loads(b) for b in doc_blocks("json"))
    run = Run(make_stage())
    run.hold(6, cans(2))
    slot_payload = next(p for _, name, p in run.slots if name == "cola")
    assert slot_payload == {**slot_doc, "since": 5.0, "ts": 5.0}
    assert run.events[0].keys() == event_doc.keys()
    assert re.fullmatch(r"\d+-[0-9a-f]{6}", event_doc["id"]) and re.fullmatch(
        r"\d+-[0-9a-f]{6}", run.events[0]["id"]
    )
