"""The README's first command, end to end: to a running broker, to the embedded amqtt broker when
nothing listens, and with no broker at all; plus the shelf clip's schedule and assets."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import edge_agent.demo as demo
from edge_agent.cli import main
from edge_agent.demo import analytics as demo_analytics
from edge_agent.demo import clip
from edge_agent.demo.broker import EmbeddedBroker, free_port, port_is_free
from edge_agent.demo.report import CountsTable
from edge_agent.publish.topics import Topics
from tests.helpers.net import listeners, require_amqtt
from tools.toy_models import colour_blocks_bundle

TOPICS = Topics("edgesight", demo.DEVICE_ID)
#: The trained shelf detector's place, taken before any test points demo.BUNDLE elsewhere.
SHELF_BUNDLE = demo.BUNDLE
ROW = re.compile(r"^\s*\d+s(\s+\d+)+$", re.MULTILINE)
#: Shelf detector vs the clip's ground truth, on frames with no hand in view: mean over frames
#: of the summed per-label count error. 19 items stand on the shelf; a few are cut by the frame.
MAX_MEAN_COUNT_ERROR = 3.0


@pytest.fixture(autouse=True)
def as_fast_as_the_model_goes(monkeypatch):
    monkeypatch.setattr(demo, "REALTIME", False)


def run_demo(out: Path, host: str, port: int) -> int:
    return main(["demo", "--out", str(out), "--mqtt-host", host, "--mqtt-port", str(port)])


def check_outputs(out: Path, printed: str, sc: demo.Scenario) -> None:
    """The table has a row per second of video; the annotated frames are JPEGs of the clip."""
    assert f"processed {sc.frames} of {sc.frames} frames" in printed
    assert len(ROW.findall(printed)) == math.ceil(sc.frames / sc.fps), printed
    folder = out / demo.ANNOTATED_DIR
    assert f"annotated frames: {folder.resolve()}" in printed
    jpegs = sorted(folder.glob("*.jpg"))
    assert len(jpegs) == math.ceil(sc.frames / demo.report.ANNOTATE_EVERY_FRAMES)
    first = jpegs[0].read_bytes()
    assert first[:2] == b"\xff\xd8" and first[-2:] == b"\xff\xd9"
    clip_frame = cv2.VideoCapture(str(out / sc.clip_name)).read()[1]
    for path in (jpegs[0], jpegs[-1]):
        image = cv2.imread(str(path))
        assert image is not None and image.shape == clip_frame.shape, path


def check_counts(sc: demo.Scenario, payloads: list[dict]) -> None:
    """Counts fit the clip: for the shelf detector, the taken/put-back schedule."""
    counts = [p["counts"] for p in sorted(payloads, key=lambda p: p["seq"])]
    assert len(counts) == sc.frames
    if sc.bundle != SHELF_BUNDLE:
        return  # a stand-in bundle on the shelf clip: its counts mean nothing
    assert_counts_follow_the_schedule(counts)


def assert_counts_follow_the_schedule(counts: list[dict[str, int]]) -> None:
    assets = clip.load_assets()
    truth = {i: clip.expected_counts(assets, i) for i in range(clip.CLIP_FRAMES)}
    quiet = [i for i, t in truth.items() if t is not None]
    errors = [
        sum(abs(counts[i].get(lb, 0) - n) for lb, n in (truth[i] or {}).items()) for i in quiet
    ]
    assert statistics.mean(errors) <= MAX_MEAN_COUNT_ERROR, errors
    first_move = min(take for _, take, _ in clip.SCHEDULE)
    last_move = max(back for _, _, back in clip.SCHEDULE) + 2 * clip.REACH_FRAMES
    taken = range(len(assets.taken))
    before = [i for i in quiet if i < first_move]
    away = [i for i in quiet if not any(clip.on_shelf(k, i) for k in taken)]
    after = [i for i in quiet if i >= last_move]
    assert before and away and after

    def median_total(frames: list[int], label: str | None = None) -> float:
        return statistics.median(
            sum(counts[i].values()) if label is None else counts[i].get(label, 0) for i in frames
        )

    assert median_total(before) - median_total(away) >= len(assets.taken) - 1
    assert abs(median_total(after) - median_total(before)) <= 1
    for item in assets.taken:
        label = assets.labels[item.box]
        assert median_total(away, label) < median_total(before, label), label


def result_payloads(rec, sc: demo.Scenario) -> list[dict]:
    topic = TOPICS.result(sc.source_id)
    assert rec.wait_for(lambda: len(rec.on(topic)) >= sc.frames), len(rec.on(topic))
    payloads = rec.json(topic)
    assert sorted(p["seq"] for p in payloads) == list(range(sc.frames))
    return payloads


def test_demo_publishes_every_frame_to_a_running_broker(tmp_path, broker, mqtt_recorder, capsys):
    sc = demo.scenario()
    rec = mqtt_recorder(broker, f"{demo.DEVICE_TOPIC_PREFIX}/#")
    assert run_demo(tmp_path, broker.host, broker.port) == 0
    printed = capsys.readouterr().out
    assert f"publishing to the MQTT broker at {broker.host}:{broker.port}" in printed
    assert re.search(rf"published \d+ MQTT messages .* at {broker.host}:{broker.port}", printed)
    check_outputs(tmp_path, printed, sc)
    check_counts(sc, result_payloads(rec, sc))
    assert json.loads(rec.on(TOPICS.status())[-1].payload)["state"] == "offline"
    check_story(tmp_path, printed, rec, sc)


def check_story(out: Path, printed: str, rec, sc: demo.Scenario) -> None:
    """The counting stages: the sliding bag crosses the line once each way, each emptied slot
    goes out of stock once and is restocked once (the hands passing fire nothing), and each
    event has its annotated snapshot, printed, published and on disk."""
    assert "line top-shelf: 1 in, 1 out" in printed
    base = f"{demo.DEVICE_TOPIC_PREFIX}/{sc.source_id}"
    assert rec.wait_for(lambda: rec.json(f"{base}/line/top-shelf"))
    line = rec.json(f"{base}/line/top-shelf")[-1]
    assert (line["in"], line["out"]) == (1, 1) and line["labels"] == {"bag": {"in": 1, "out": 1}}
    events = [e for e in rec.json(f"{base}/event") if "slot" in e]
    for slot, _, _ in demo_analytics.SLOTS:
        assert [e["type"] for e in events if e["slot"] == slot] == ["out_of_stock", "restocked"]
        assert f"slot {slot}: out of stock" in printed and f"slot {slot}: restocked" in printed
    folder = out / demo.STATE_DIR / "sources" / sc.source_id / "snapshots"
    assert {e["snapshot"] for e in events} == {p.name for p in folder.glob("*.jpg")}
    assert f"snapshots: {folder.resolve()} (4 JPEGs)" in printed
    assert rec.on(f"{base}/snapshot")[-1].payload[:2] == b"\xff\xd8"


def test_demo_starts_an_embedded_broker_when_none_listens(
    tmp_path, mqtt_recorder, capsys, monkeypatch
):
    require_amqtt()
    sc = demo.scenario()
    port = free_port()
    seen: dict = {}
    real_start, real_close = EmbeddedBroker.start, EmbeddedBroker.close

    def start(self: EmbeddedBroker) -> None:
        real_start(self)
        seen["listeners"] = listeners(self.port)
        seen["rec"] = mqtt_recorder(self, f"{demo.DEVICE_TOPIC_PREFIX}/#")  # before the agent

    def close(self: EmbeddedBroker) -> None:
        rec = seen["rec"]  # let the last messages reach the subscriber before shutting down
        rec.wait_for(
            lambda: any(
                json.loads(m.payload)["state"] == "offline" for m in rec.on(TOPICS.status())
            )
        )
        real_close(self)

    monkeypatch.setattr(EmbeddedBroker, "start", start)
    monkeypatch.setattr(EmbeddedBroker, "close", close)
    assert run_demo(tmp_path, "127.0.0.1", port) == 0
    printed = capsys.readouterr().out
    assert f"started an embedded one (amqtt) on 127.0.0.1:{port}" in printed
    watch = demo.watch_command(demo.Target("127.0.0.1", port, "embedded"))
    assert f":{port}" in watch or f"-p {port}" in watch
    assert watch in printed  # mosquitto_sub where installed, else amqtt_sub
    assert re.search(
        rf"published \d+ MQTT messages .* embedded amqtt broker .* at 127.0.0.1:{port}", printed
    )
    assert seen["listeners"] == ["0100007F"]  # 127.0.0.1 only
    check_outputs(tmp_path, printed, sc)
    check_counts(sc, result_payloads(seen["rec"], sc))
    assert port_is_free("127.0.0.1", port)  # closed with the demo


def test_demo_without_amqtt_still_runs_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # import raises ImportError
    sc = demo.scenario()
    assert run_demo(tmp_path, "127.0.0.1", free_port()) == 0
    captured = capsys.readouterr()
    assert "pip install 'edgesight[demo]'" in captured.err and "not delivered" in captured.err
    check_outputs(tmp_path, captured.out, sc)


def test_shelf_clip_with_labels_from_the_manifest(
    tmp_path, broker, mqtt_recorder, capsys, monkeypatch
):
    """The shelf path runs with whatever bundle BUNDLE names; here colour-blocks relabelled."""
    bundle = tmp_path / "bundle"
    colour_blocks_bundle(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["labels"] = ["can", "bottle", "box"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(demo, "BUNDLE", bundle)
    sc = demo.scenario()
    assert (sc.source_id, sc.frames, sc.fps) == ("shelf", clip.CLIP_FRAMES, clip.CLIP_FPS)
    rec = mqtt_recorder(broker, f"{demo.DEVICE_TOPIC_PREFIX}/#")
    out = tmp_path / "out"
    assert run_demo(out, broker.host, broker.port) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^\s+time\s+can\s+bottle\s+box\s+total\s+out\s+in$", printed, re.MULTILINE)
    check_outputs(out, printed, sc)
    check_counts(sc, result_payloads(rec, sc))
    # A second run reuses the clip.
    assert run_demo(out, broker.host, broker.port) == 0
    assert "made the clip" not in capsys.readouterr().out


def test_shelf_clip_ground_truth_follows_the_schedule():
    assets = clip.load_assets()
    start = clip.expected_counts(assets, 0)
    assert start == {"bag": 8, "can": 2, "box": 5, "bottle": 4}
    taken_labels = [assets.labels[t.box] for t in assets.taken]
    assert len(set(taken_labels)) == len(taken_labels) == 3
    all_away = clip.SCHEDULE[-1][1] + 2 * clip.REACH_FRAMES  # the last take is done
    away = clip.expected_counts(assets, all_away)
    assert away is not None
    assert {lb: start[lb] - away[lb] for lb in start} == {
        lb: taken_labels.count(lb) for lb in start
    }
    assert clip.expected_counts(assets, clip.CLIP_FRAMES - 1) == start
    assert clip.expected_counts(assets, clip.SCHEDULE[0][1]) is None  # a hand is in view
    # No two moves overlap, and every gap leaves hand-free frames where counts are exact.
    moves = sorted(s for _, take, back in clip.SCHEDULE for s in (take, back))
    assert all(b - a >= 2 * clip.REACH_FRAMES + 6 for a, b in itertools.pairwise(moves))


def test_shelf_frames_are_deterministic_and_the_taken_item_leaves_empty_shelf():
    assets = clip.load_assets()
    item = assets.taken[0]
    x1, y1, x2, y2 = item.region
    take = clip.SCHEDULE[0][1]
    gone = take + 2 * clip.REACH_FRAMES  # hand out of view, item off the shelf
    a, b = clip.compose_frame(assets, gone), clip.compose_frame(assets, gone)
    assert (a == b).all()
    region = a[y1:y2, x1:x2][item.mask].astype(int)
    assert abs(region - assets.empty[y1:y2, x1:x2][item.mask]).max() == 0
    assert (clip.compose_frame(assets, 0) == assets.scene).all()


DEMO_PROBE = """
import sys
import edge_agent.demo as demo
from edge_agent.cli import main
from edge_agent.demo import clip
from edge_agent.demo.report import CountsTable
demo.REALTIME = False
code = main(["demo", "--out", sys.argv[1], "--mqtt-host", "127.0.0.1", "--mqtt-port", sys.argv[2]])
clip.compose_frame(clip.load_assets(), 20)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "trainer"))
print("imported:" + ",".join(bad), code)
"""


def test_demo_never_imports_torch_or_trainer(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", DEMO_PROBE, str(tmp_path), str(free_port())],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines()[-1] == "imported: 0", out.stdout[-500:]


def test_asset_tool_makes_assets_the_clip_can_use(tmp_path):
    from tools.build_demo_assets import build  # imports trainer.synth: the agent never does

    build(tmp_path, index=17, seed=0, size=320)
    assets = clip.load_assets(tmp_path)
    assert assets.size == (320, 320) and len(assets.taken) == 3
    for i in (clip.SCHEDULE[0][1] + clip.REACH_FRAMES, clip.SLIDE[1] - 1):  # a hand; the slide
        assert clip.compose_frame(assets, i).shape == (320, 320, 3)
    assert clip.slide_offset(assets, clip.SLIDE[1] - 1) == round(clip.SLIDE_DX * 320)


def test_table_rows_take_each_seconds_most_frequent_count():
    stream = io.StringIO()
    table = CountsTable(["can", "bag"], fps=4, stream=stream)
    table.header()
    cans = [2, 2, 1, 2, 1, 1, 1, 2, 2, 2]  # a hand hides a can for one frame, then takes one
    bags = [3, 3, 3, 3, 3, 3, 2, 2, 4, 4]  # a tie goes to the larger count
    for seq, (can, bag) in enumerate(zip(cans, bags, strict=True)):
        table.add(seq, {"can": can, "bag": bag})
    table.finish()  # the partial last second gets a row too
    assert [(r.second, r.counts, r.gone, r.came) for r in table.rows] == [
        (0, {"can": 2, "bag": 3}, 0, 0),
        (1, {"can": 1, "bag": 3}, 1, 0),
        (2, {"can": 2, "bag": 4}, 1, 2),
    ]
    lines = stream.getvalue().splitlines()
    assert lines[0].split() == ["time", "can", "bag", "total", "out", "in"]
    assert lines[-1].split() == ["3s", "2", "4", "6", "1", "2"]


def test_demo_assets_stay_small():
    total = sum(p.stat().st_size for p in clip.ASSETS.iterdir())
    assert total < 200 * 1024, f"{total / 1024:.0f} KB"
