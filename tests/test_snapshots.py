"""Event snapshots: annotated JPEGs in a folder capped in bytes that survives restarts and never
touches what it did not write, their names in the events that asked, the latest published."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edge_agent.analytics.slots  # noqa: F401  (registers "slots" until the lead wires it)
from edge_agent.analytics.snapshots import SnapshotOptions, Snapshots, build_snapshot
from edge_agent.annotate import OVERLAY_COLOURS
from edge_agent.config import MqttConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, build_chain, stage_options, stage_types
from edge_agent.publish.publisher import MqttPublisher
from edge_agent.snapshot_store import NAME_PATTERN, SnapshotStore, snapshot_name
from edge_agent.types import Detections, Frame, Overlay, Result, SnapshotRequest
from tests.helpers.mqtt import Broker, Recorder

LABELS = ["cola", "water"]
W, H = 640, 480
#: Two slots on one shelf row (y 192..288): cola on the left half, water on the right.
SLOTS = {
    "slots": [
        {
            "name": "cola",
            "polygon": [[0, 0.4], [0.5, 0.4], [0.5, 0.6], [0, 0.6]],
            "label": "cola",
            "capacity": 4,
        },
        {
            "name": "water",
            "polygon": [[0.5, 0.4], [1, 0.4], [1, 0.6], [0.5, 0.6]],
            "label": "water",
            "capacity": 4,
        },
    ]
}


# --- the folder ring --------------------------------------------------------------------------


def test_the_ring_removes_the_oldest_to_stay_under_its_cap(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_bytes=10_000)
    names = [store.save(bytes([k]) * 3000, 1_790_000_000 + k, "low_stock") for k in range(5)]
    assert store.names == names[2:] and store.total_bytes == 9000 and store.removed == 2
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == sorted(names[2:])
    assert (tmp_path / "snaps" / names[4]).read_bytes() == bytes([4]) * 3000


def test_a_restart_lists_the_folder_oldest_first_and_keeps_what_it_did_not_write(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "snaps"
    first = SnapshotStore(folder, max_bytes=10_000)
    a, b, c = (first.save(b"x" * 3000, 1_790_000_000 + k, "r") for k in range(3))
    # File times decide "oldest" (names are capture times, which a replayed video repeats).
    for name, mtime in ((a, 300), (b, 100), (c, 200)):
        os.utime(folder / name, (mtime, mtime))
    keep = {
        "notes.txt": b"a user's file",
        "snap_by_hand.jpg": b"not our name",
        ".other.tmp": b"not our temp file",
    }
    for name, data in keep.items():
        (folder / name).write_bytes(data)
    (folder / "sub").mkdir()
    interrupted = folder / f".{snapshot_name(1_790_000_000, 'r')}.k3j2l1.tmp"
    interrupted.write_bytes(b"half a jpeg")

    again = SnapshotStore(folder, max_bytes=10_000)
    again.open()
    assert again.names == [b, c, a] and again.total_bytes == 9000
    assert not interrupted.exists()  # a write a power cut interrupted
    d = again.save(b"y" * 3000, 1_790_000_010, "r")
    assert again.names == [c, a, d]  # b, the oldest file, went first
    assert {n: (folder / n).read_bytes() for n in keep} == keep and (folder / "sub").is_dir()

    smaller = SnapshotStore(folder, max_bytes=5000)  # the cap was lowered in the config
    smaller.open()
    assert smaller.names == [d] and sorted(p.name for p in folder.iterdir() if p.name == d)


def test_a_snapshot_larger_than_the_cap_or_an_unwritable_folder_raise_and_keep_the_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "snaps"
    store = SnapshotStore(folder, max_bytes=10_000)
    kept = store.save(b"x" * 3000, 1_790_000_000, "r")
    with pytest.raises(ValueError, match=r"a snapshot of 10001 bytes is larger than max_bytes"):
        store.save(b"x" * 10_001, 1_790_000_001, "r")
    assert store.names == [kept] and (folder / kept).exists()
    with pytest.raises(ValueError, match=r"max_bytes must be positive, but got 0"):
        SnapshotStore(folder, 0)
    blocked = SnapshotStore(tmp_path / "file", max_bytes=10_000)
    (tmp_path / "file").write_text("a file where the folder should be")
    with pytest.raises(OSError):
        blocked.save(b"x", 1_790_000_000, "r")


def test_names_read_as_the_capture_time_and_reason() -> None:
    name = snapshot_name(1_790_000_000.25, "Line Crossing/in")
    assert re.fullmatch(r"snap_20260921T141320_250Z_line_crossing_in_[0-9a-f]{6}\.jpg", name)
    assert NAME_PATTERN.fullmatch(name)
    assert NAME_PATTERN.fullmatch(snapshot_name(float("nan"), ""))  # never a bad name
    assert snapshot_name(0, "r") != snapshot_name(0, "r")
    assert len(snapshot_name(0, "x" * 100)) == len(snapshot_name(0, "x" * 32))


# --- the stage --------------------------------------------------------------------------------


def shelf_image(colour: tuple[int, int, int] = (90, 90, 90), w: int = W, h: int = H) -> np.ndarray:
    return np.full((h, w, 3), colour, np.uint8)


def frame_and_result(
    ts: float, boxes: list[tuple[str, float, float]], image: np.ndarray | None = None
) -> tuple[Frame, Result]:
    """A frame with a red can drawn under each box (30 x 50 px centred on the point)."""
    picture = shelf_image() if image is None else image.copy()
    xyxy = np.array([[x - 15, y - 25, x + 15, y + 25] for _, x, y in boxes], np.float32)
    for x1, y1, x2, y2 in xyxy.astype(int):
        picture[y1:y2, x1:x2] = (0, 0, 200)
    detections = Detections(
        xyxy.reshape(-1, 4),
        np.full(len(boxes), 0.9, np.float32),
        np.array([LABELS.index(label) for label, _, _ in boxes], np.int32),
    )
    size = (picture.shape[1], picture.shape[0])
    seq = round(ts * 10)
    counts = {label: sum(1 for b in boxes if b[0] == label) for label in LABELS}
    result = Result("shelf", seq, ts, "m", "detect", LABELS, size, detections, counts=counts)
    return Frame(picture, "shelf", seq, ts), result


def make_chain(state_dir: Path | None, **snapshot: Any) -> Any:
    specs = [("slots", stage_options("slots", SLOTS))]
    specs.append(("snapshot", stage_options("snapshot", snapshot)))
    return build_chain("shelf", specs, StatsRegistry(), labels=LABELS, state_dir=state_dir)


def run_until_events(chain: Any, boxes: list[tuple[str, float, float]], t0: float) -> Result:
    """Frames at 10 fps from t0 until one carries an event; that frame's result."""
    for k in range(200):
        frame, result = frame_and_result(t0 + k / 10, boxes)
        result = chain.process(result, frame)
        if any(p.kind == "event" for p in result.publications):
            return result
    raise AssertionError("no event")


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_an_event_gets_an_annotated_snapshot_kept_named_and_published(tmp_path: Path) -> None:
    chain = make_chain(tmp_path)
    assert chain.needs_frame and stage_types()["snapshot"].requires == ()
    cans = [("cola", 60, 240), ("water", 400, 240), ("water", 440, 240), ("water", 480, 240)]
    result = run_until_events(chain, cans, t0=1_790_000_000.0)  # one cola of four: low
    kinds = [p.kind for p in result.publications]
    assert kinds == ["slot", "event", "slot", "snapshot"]  # the JPEG after the events
    event, jpeg = result.publications[1].payload, result.publications[3].payload
    assert isinstance(event, dict) and isinstance(jpeg, bytes)
    assert (event["type"], event["slot"]) == ("low_stock", "cola")
    assert event["snapshot"] is not None and NAME_PATTERN.fullmatch(event["snapshot"])
    assert "_low_stock_" in event["snapshot"]
    assert (tmp_path / "snapshots" / event["snapshot"]).read_bytes() == jpeg
    picture = decode(jpeg)
    assert picture.shape == (H, W, 3)
    # Annotated: the slot outlines in white, the box tag above the can, the counts panel.
    white = np.all(np.abs(picture.astype(int) - OVERLAY_COLOURS["zone"]) < 40, axis=2)
    assert white[288, 10:630].mean() > 0.9 and white[200:280, 320].mean() > 0.9
    plain = shelf_image()
    assert np.abs(picture[180:214, 45:120].astype(int) - plain[180:214, 45:120]).mean() > 20
    assert np.abs(picture[:40, :80].astype(int) - plain[:40, :80]).mean() > 20


def test_events_of_one_frame_share_one_snapshot(tmp_path: Path) -> None:
    chain = make_chain(tmp_path)
    result = run_until_events(chain, [], t0=1_790_000_000.0)  # both slots out at once
    events = [p.payload for p in result.publications if p.kind == "event"]
    snapshots = [p for p in result.publications if p.kind == "snapshot"]
    assert [e["type"] for e in events] == ["out_of_stock", "out_of_stock"]  # type: ignore[index]
    assert len(snapshots) == 1 and len(os.listdir(tmp_path / "snapshots")) == 1
    assert events[0]["snapshot"] == events[1]["snapshot"]  # type: ignore[index]


def make_stage(state_dir: Path | None, stats: StatsRegistry | None = None, **options: Any) -> Any:
    validated = stage_options("snapshot", options)
    assert isinstance(validated, SnapshotOptions)
    context = StageContext("shelf", stats or StatsRegistry(), tuple(LABELS), state_dir)
    return build_snapshot(validated, context)


def request(reason: str = "low_stock", **kwargs: Any) -> tuple[SnapshotRequest, dict[str, Any]]:
    event: dict[str, Any] = {"type": reason, "snapshot": None}
    return SnapshotRequest(reason, 1_790_000_000.0, event=event, **kwargs), event


def test_a_kept_frame_is_drawn_with_its_own_boxes(tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    frame, result = frame_and_result(1_790_000_001.0, [("cola", 100, 240)])  # grey, now
    kept_frame, kept = frame_and_result(
        1_790_000_000.0, [("water", 500, 100)], image=shelf_image((200, 60, 0))
    )
    asked, event = request("entered", image=kept_frame.image, predictions=kept.predictions)
    result.snapshot_requests.append(asked)
    result = stage.process(result, frame)
    (published,) = [p.payload for p in result.publications]
    assert isinstance(published, bytes)
    picture = decode(published)
    assert np.abs(picture[300:400, 100:300].astype(int) - (200, 60, 0)).max() < 20  # kept, blue
    assert np.abs(picture[85:115, 490:510].astype(int) - (0, 0, 200)).max() < 40  # its can
    assert event["snapshot"] in os.listdir(tmp_path / "snapshots")


def test_wide_frames_are_scaled_down_before_drawing(tmp_path: Path) -> None:
    stage = make_stage(None, max_width=1280)
    frame, result = frame_and_result(0.0, [("cola", 960, 540)], image=shelf_image(w=1920, h=1080))
    result.snapshot_requests.append(request()[0])
    result.overlays.append(Overlay("zone", "all", ((0, 0), (1, 0), (1, 1), (0, 1)), "all"))
    picture = decode(stage.process(result, frame).publications[0].payload)
    assert picture.shape == (720, 1280, 3)
    assert np.abs(picture[352:368, 634:646].astype(int) - (0, 0, 200)).max() < 40  # the can


@pytest.mark.parametrize(
    ("state_dir", "options", "kept", "published"),
    [
        (True, {}, True, True),
        (False, {}, False, True),  # built without the agent: nothing on disk
        (True, {"save": False}, False, True),
        (True, {"publish": False}, True, False),
        (True, {"on": ["out_of_stock"]}, False, False),  # not a reason it honours
    ],
)
def test_options_decide_what_is_kept_and_published(
    tmp_path: Path, state_dir: bool, options: dict[str, Any], kept: bool, published: bool
) -> None:
    stage = make_stage(tmp_path if state_dir else None, **options)
    frame, result = frame_and_result(0.0, [])
    asked, event = request("low_stock")
    result.snapshot_requests.append(asked)
    result = stage.process(result, frame)
    folder = tmp_path / "snapshots"
    on_disk = os.listdir(folder) if folder.exists() else []
    assert (event["snapshot"] is not None, len(on_disk) == 1) == (kept, kept)
    assert [p.kind for p in result.publications] == (["snapshot"] if published else [])


def test_a_snapshot_that_cannot_be_written_is_counted_logged_once_and_still_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "snapshots").write_text("a file where the folder should be")
    stats = StatsRegistry()
    stage = make_stage(tmp_path, stats)
    for ts in (0.0, 1.0):
        frame, result = frame_and_result(ts, [])
        asked, event = request()
        result.snapshot_requests.append(asked)
        result = stage.process(result, frame)
        assert event["snapshot"] is None and [p.kind for p in result.publications] == ["snapshot"]
    counters = stats.snapshot()["stage"]["shelf/snapshot"]
    assert counters["snapshot_errors"] == 2 and counters["snapshots_written"] == 0
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert "snapshot not kept in" in caplog.messages[0]


def test_counters_follow_the_folder(tmp_path: Path) -> None:
    stats = StatsRegistry()
    stage = make_stage(tmp_path, stats, max_bytes=1_000_000)
    noisy = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)  # ~300 kB
    for ts in range(6):
        frame, result = frame_and_result(float(ts), [], image=noisy)
        result.snapshot_requests.append(request()[0])
        stage.process(result, frame)
    counters = stats.snapshot()["stage"]["shelf/snapshot"]
    files = list((tmp_path / "snapshots").iterdir())
    assert counters["snapshots_written"] == 6
    assert counters["snapshots_removed"] == 6 - len(files) > 0
    assert counters["snapshot_folder_bytes"] == sum(f.stat().st_size for f in files) <= 1_000_000


def test_no_picture_no_request_no_work(tmp_path: Path) -> None:
    stats = StatsRegistry()
    stage = make_stage(tmp_path, stats)
    assert isinstance(stage, Snapshots) and stage.needs_frame
    frame, result = frame_and_result(0.0, [])
    assert stage.process(result, frame).publications == []  # no request
    result.snapshot_requests.append(request()[0])
    assert stage.process(result, None).publications == []
    assert stats.snapshot()["stage"]["shelf/snapshot"]["snapshots_without_picture"] == 1
    assert not (tmp_path / "snapshots").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_bytes": 999_999}, r"max_bytes: Input should be greater than or equal to 1000000"),
        ({"max_bytes": 10**12}, r"max_bytes: Input should be less than or equal to 100000000000"),
        ({"max_bytes": 5e7}, r"max_bytes: Input should be a valid integer"),
        ({"quality": 0}, r"quality: Input should be greater than or equal to 1"),
        ({"quality": 101}, r"quality: Input should be less than or equal to 100"),
        ({"max_width": 100}, r"max_width: Input should be greater than or equal to 160"),
        ({"on": []}, r"on: List should have at least 1 item"),
        ({"on": ["Low stock"]}, r"on: each reason must be lower-case .* but got 'Low stock'"),
        ({"on": ["low_stock", "low_stock"]}, r"on: reasons must not repeat"),
        ({"publish": "yes"}, r"publish: Input should be a valid boolean"),
        ({"folder": "/tmp"}, r"folder: unknown key"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"stage 'snapshot': " + message):
        stage_options("snapshot", options)


# --- over MQTT --------------------------------------------------------------------------------


def test_the_latest_snapshot_is_retained_on_its_topic_as_jpeg_bytes(
    tmp_path: Path, broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> None:
    publisher = MqttPublisher(
        MqttConfig(host="127.0.0.1", port=broker.port), "dev1", "0.1.0", None, ["shelf"]
    )
    publisher.start()
    base = "edgesight/dev1/shelf"
    try:
        early = mqtt_recorder(broker, f"{base}/#")
        deadline = time.monotonic() + 10
        while not publisher.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert publisher.connected, "the publisher did not connect"
        chain = make_chain(tmp_path)
        names = []
        for boxes, t0 in (([("cola", 60, 240)], 1_790_000_000.0), ([], 1_790_000_100.0)):
            result = run_until_events(chain, boxes, t0)  # cola low and water out; cola out
            publisher.emit(result, None)
            names += [p.payload["snapshot"] for p in result.publications if p.kind == "event"]  # type: ignore[index]
        # Once a subscriber has had both, the broker holds the second as the retained one.
        assert early.wait_for(
            lambda: (
                len(early.on(f"{base}/snapshot")) == 2 and len(early.on(f"{base}/slot/cola")) == 2
            )
        )
        late = mqtt_recorder(broker, f"{base}/#")  # subscribes after: gets the retained ones
        assert late.wait_for(lambda: len(late.on(f"{base}/snapshot")) == 1)
        (snapshot,) = late.on(f"{base}/snapshot")
        assert snapshot.retain and snapshot.qos == 0
        assert decode(snapshot.payload).shape == (H, W, 3)
        assert len(set(names)) == 2  # the first frame's two events share one
        assert snapshot.payload == (tmp_path / "snapshots" / names[-1]).read_bytes()
        events = [json.loads(m.payload) for m in late.on(f"{base}/event")]
        assert events == []  # events are not retained: a late subscriber gets none
        cola = json.loads(late.on(f"{base}/slot/cola")[0].payload)
        assert late.on(f"{base}/slot/cola")[0].retain and cola["state"] == "out"
    finally:
        publisher.close(timeout_s=1.0)


def test_a_kept_picture_that_cannot_be_drawn_costs_only_its_own_snapshot(tmp_path: Path) -> None:
    stats = StatsRegistry()
    stage = make_stage(tmp_path, stats)
    frame, result = frame_and_result(1_790_000_000.0, [("cola", 100, 240)])
    broken, broken_event = request("entered", image=np.zeros((10, 10), np.uint8))  # not BGR
    fine, fine_event = request("low_stock")
    result.snapshot_requests += [broken, fine]
    result = stage.process(result, frame)
    assert broken_event["snapshot"] is None and fine_event["snapshot"] is not None
    assert [p.kind for p in result.publications] == ["snapshot"]
    assert stats.snapshot()["stage"]["shelf/snapshot"]["snapshot_errors"] == 1
