"""Commands on a running agent over a real mosquitto: MQTT 5 request/response, the error codes,
retained commands, MQTT 3.1.1 reply topics, reload_config through ``edge-agent run``, and a
seeded fuzz run after which the agent still answers and publishes."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.publish.commands import DEFAULT_MAX_BYTES
from tests.helpers.agent_run import (
    BASE,
    FPS,
    SOURCE,
    WAIT_S,
    Assets,
    Requester,
    agent_config,
    agent_process,
    make_assets,
    online_run,
    requester,
    results,
    running_agent,
    source,
    statuses,
    wait_results,
    write_config,
)
from tests.helpers.mqtt import Broker, Recorder

SECRET = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return make_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture
def live(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> Iterator[tuple[Requester, Recorder]]:
    """An in-process agent (MQTT 5, a password in its config) and a requester and a recorder."""
    cfg = agent_config(assets, broker, tmp_path / "state", username="agent", password=SECRET)
    rec = mqtt_recorder(broker, f"{BASE}/#")
    with running_agent(write_config(tmp_path / "agent.yaml", cfg)), requester(broker) as req:
        online_run(rec)
        yield req, rec


# --- each command on a running agent -----------------------------------------------------------


def test_ping_answers_with_the_run_id_of_the_status(live: tuple[Requester, Recorder]) -> None:
    req, rec = live
    reply = req.request("ping", {"id": "p-1"})
    assert reply["ok"] is True and reply["command"] == "ping" and reply["id"] == "p-1"
    assert reply["result"]["pong"] is True
    assert reply["result"]["run"] == statuses(rec)[-1]["run"]


def test_get_config_masks_the_password(live: tuple[Requester, Recorder]) -> None:
    req, _ = live
    corr = req.send("get_config")
    reply = req.wait(corr)
    assert reply["ok"] is True
    mqtt_cfg = reply["result"]["mqtt"]
    assert mqtt_cfg["password"] == "***" and mqtt_cfg["username"] == "agent"
    assert reply["result"]["sources"][0]["id"] == SOURCE
    (raw,) = [
        m.payload
        for m in req.reply_messages()
        if getattr(m.properties, "CorrelationData", None) == corr
    ]
    assert SECRET.encode() not in raw


def test_get_stats_reports_each_source_fps(live: tuple[Requester, Recorder]) -> None:
    req, rec = live
    wait_results(rec, 3)
    reply = req.request("get_stats")
    assert reply["ok"] is True
    stats = reply["result"]
    assert stats["schema"] == "edgesight.stats/1"
    assert isinstance(stats["sources"][SOURCE]["fps"], float)
    assert stats["sources"][SOURCE]["results"] >= 3


def labels_in(result: dict[str, Any]) -> set[str]:
    return {p["tagName"] for p in result["predictions"]}


def results_after(rec: Recorder, seq: int, n: int) -> list[dict[str, Any]]:
    """Wait for ``n`` results with a seq above ``seq``; return them."""

    def later() -> list[dict[str, Any]]:
        return [r for r in results(rec) if r["seq"] > seq]

    assert rec.wait_for(lambda: len(later()) >= n, WAIT_S), len(later())
    return later()


#: Results already decoded when a threshold changes may still be in the outbox: the ones
#: checked are those after this many more (the post queue holds 8, the hand-over 1).
SETTLE_FRAMES = 12


def test_set_threshold_changes_what_the_running_model_reports(
    live: tuple[Requester, Recorder],
) -> None:
    req, rec = live
    wait_results(rec, 1)
    assert "red" in labels_in(results(rec)[-1])  # red is in every frame of the clip

    reply = req.request("set_threshold", {"score": 1.0, "label": "red"})
    assert reply["ok"] is True
    assert reply["result"]["thresholds"]["red"] == 1.0
    assert set(reply["result"]["thresholds"]) == {"red", "green", "blue"}
    assert reply["result"]["thresholds"]["blue"] < 1.0
    seq = results(rec)[-1]["seq"]
    later = results_after(rec, seq, SETTLE_FRAMES + 10)[SETTLE_FRAMES:]
    assert all("red" not in labels_in(r) for r in later), [labels_in(r) for r in later]
    assert all(r["counts"].get("red", 0) == 0 for r in later)
    assert any("blue" in labels_in(r) for r in later)  # the others are still reported

    reply = req.request("set_threshold", {"score": 0.5})  # every label back to 0.5
    assert reply["result"]["thresholds"] == {"red": 0.5, "green": 0.5, "blue": 0.5}
    seq = results(rec)[-1]["seq"]
    later = results_after(rec, seq, SETTLE_FRAMES + 5)[SETTLE_FRAMES:]
    assert all("red" in labels_in(r) for r in later)


def test_set_threshold_refuses_a_label_the_model_lacks(live: tuple[Requester, Recorder]) -> None:
    req, _ = live
    reply = req.request("set_threshold", {"score": 0.7, "label": "purple"})
    assert (reply["ok"], reply["code"]) == (False, "bad_label")
    assert "purple" in reply["error"] and "red" in reply["error"]


def test_snapshot_publishes_the_next_frame_as_jpeg(live: tuple[Requester, Recorder]) -> None:
    req, rec = live
    reply = req.request("snapshot", {"source": SOURCE})
    assert reply["ok"] is True, reply
    result = reply["result"]
    topic = f"{BASE}/{SOURCE}/snapshot"
    assert result["topic"] == topic and result["bytes"] > 0
    assert rec.wait_for(lambda: len(rec.on(topic)) == 1, WAIT_S)
    (msg,) = rec.on(topic)
    assert len(msg.payload) == result["bytes"]
    image = cv2.imdecode(np.frombuffer(msg.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (480, 640, 3)
    # the clip's red block (BGR 0, 0, 255) at (128, 96)-(256, 192), JPEG-blurred
    b, g, r = (int(c) for c in image[144, 192])
    assert r > 200 and g < 60 and b < 60


PAYLOAD_ERRORS = [
    ("snapshot", b'{"source": "dock"}', "bad_source", "dock"),
    ("snapshot", b'{"source": "no such/source"}', "bad_args", "source"),
    ("reboot", b"{}", "unknown_command", "reboot"),
    ("ping", b'{"id": "r1",', "bad_json", "not valid JSON"),
    ("set_threshold", b'{"score": 0.5, "score": 0.6}', "duplicate_key", "score"),
    ("ping", b" " * (DEFAULT_MAX_BYTES + 1), "too_large", str(DEFAULT_MAX_BYTES)),
    ("ping", b"\xff{}", "not_utf8", "0xff"),
    ("ping", b"[1]", "not_object", "array"),
    ("set_threshold", b'{"score": "0.5"}', "bad_args", "score"),
    ("reload_config", b"{}", "unavailable", "config file"),
]


def test_each_bad_request_gets_an_error_reply_with_its_code(
    live: tuple[Requester, Recorder],
) -> None:
    req, _ = live
    sent = [(req.send(name, payload), code, words) for name, payload, code, words in PAYLOAD_ERRORS]
    for corr, code, words in sent:
        reply = req.wait(corr)
        assert (reply["ok"], reply["code"]) == (False, code), reply
        assert words in reply["error"], reply
    assert req.request("ping")["ok"] is True  # and the next command is answered


def test_a_retained_command_waiting_on_the_broker_is_not_answered(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state")
    with requester(broker) as req:
        waiting = req.send("ping", {"id": "retained"}, retain=True)
        with running_agent(write_config(tmp_path / "agent.yaml", cfg)):
            online_run(rec)
            after = req.send("ping", {"id": "live"})
            assert req.wait(after)["id"] == "live"  # answered in order, after the retained one
            assert req.replies(waiting) == []
            assert [m for m in rec.messages if m.topic.startswith(f"{BASE}/cmd/ping/")] == []


def test_a_retained_command_sent_while_the_agent_listens_is_not_answered(
    live: tuple[Requester, Recorder],
) -> None:
    """docs/commands.md: retained commands are ignored, with no reply. The broker hands a
    retained message to a client already subscribed with the retain flag cleared (MQTT 5
    3.3.1.3) unless the subscription asks for Retain As Published, so the agent cannot tell
    this one from a plain command unless it subscribes that way."""
    req, _ = live
    retained = req.send("ping", {"id": "retained"}, retain=True)
    after = req.send("ping", {"id": "after"})
    assert req.wait(after)["id"] == "after"
    assert req.replies(retained) == []


def test_on_mqtt_3_1_1_the_reply_goes_to_the_reply_topic(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state", protocol="3.1.1")
    with (
        running_agent(write_config(tmp_path / "agent.yaml", cfg)),
        requester(broker, protocol="3.1.1") as req,
    ):
        run = online_run(rec)
        req.send("ping", {"id": "old-style"})
        req.send("snapshot", {"id": "bad", "source": "dock"})
        assert rec.wait_for(lambda: len(req.reply_messages()) == 2, WAIT_S)
        ping, snap = req.reply_messages()
        assert ping.topic == f"{BASE}/cmd/ping/reply" and ping.qos == 1 and not ping.retain
        body = json.loads(ping.payload)
        assert (body["ok"], body["id"], body["result"]["run"]) == (True, "old-style", run)
        assert snap.topic == f"{BASE}/cmd/snapshot/reply"
        assert json.loads(snap.payload)["code"] == "bad_source"


# --- reload_config through edge-agent run ------------------------------------------------------


def test_reload_config_restarts_with_the_new_file_or_refuses_a_bad_one(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state")
    config_file = write_config(tmp_path / "agent.yaml", cfg)
    log_file = tmp_path / "agent.log"
    with agent_process(config_file, log_file) as proc, requester(broker) as req:
        first = online_run(rec)
        wait_results(rec, 3, run=first)

        # A file with a problem: refused with it named; the same run goes on.
        bad = json.loads(json.dumps(cfg))
        bad["sources"][0]["fps_limit"] = -5
        write_config(config_file, bad)
        reply = req.request("reload_config", {"id": "bad"})
        assert (reply["ok"], reply["code"], reply["id"]) == (False, "bad_config", "bad")
        assert "fps_limit" in reply["error"] and str(config_file) in reply["error"]
        n = len(results(rec))
        wait_results(rec, n + 5, run=first)
        assert req.request("ping")["result"]["run"] == first

        # A valid file with a second source: a new run publishes both.
        good = json.loads(json.dumps(cfg))
        good["sources"].append(source(assets, "dock"))
        write_config(config_file, good)
        reply = req.request("reload_config", {"id": "good"})
        assert reply["ok"] is True and reply["result"]["reloading"] is True
        second = online_run(rec, other_than=first)
        wait_results(rec, 3, run=second)
        wait_results(rec, 3, "dock", run=second)
        latest = statuses(rec)[-1]
        assert latest["run"] == second and latest["sources"] == [SOURCE, "dock"]
        assert req.request("ping")["result"]["run"] == second
        assert proc.poll() is None
    assert proc.returncode == 0, log_file.read_text()
    log = log_file.read_text()
    assert "Traceback" not in log, log


def test_reload_config_to_a_bundle_that_cannot_load_is_refused_and_the_agent_runs_on(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    """The config file itself is valid, but its bundle folder holds no bundle: the agent must
    not stop for a config it cannot run (it would exit, and the device go dark)."""
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state")
    config_file = write_config(tmp_path / "agent.yaml", cfg)
    log_file = tmp_path / "agent.log"
    with agent_process(config_file, log_file) as proc, requester(broker) as req:
        first = online_run(rec)
        wait_results(rec, 3, run=first)
        empty = tmp_path / "no-bundle"
        empty.mkdir()
        broken = json.loads(json.dumps(cfg))
        broken["model"]["bundle"] = str(empty)
        write_config(config_file, broken)
        reply = req.request("reload_config")
        assert (reply["ok"], reply.get("code")) == (False, "bad_config"), reply
        assert str(empty) in reply["error"]
        # More frames than a reload's stop delay (0.5 s) lets through, then still answering.
        wait_results(rec, len(results(rec)) + 2 * FPS, run=first)
        assert req.request("ping")["result"]["run"] == first
        assert proc.poll() is None


# --- fuzz: random payloads to random command names ---------------------------------------------

FUZZ_SEED = 1212
FUZZ_MESSAGES = 1000
#: Requests in flight at once: below the agent's command queue (64), so none is dropped.
FUZZ_BATCH = 40
COMMAND_NAMES = ["ping", "snapshot", "set_threshold", "reload_config", "get_config", "get_stats"]
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz_-.0123456789ÄéЖ€ "


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2**70, rng.randint(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.0, 1.0, 0.5, -0.1, 1e308, 5e-324, rng.random()])
    if kind == 4:
        return "".join(rng.choice(NAME_CHARS) for _ in range(rng.randrange(12)))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["id", "score", "label", "source", "sig", "x", *COMMAND_NAMES]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def wrong_types(rng: random.Random) -> dict[str, Any]:
    """The right keys with values of any type (sometimes the right one)."""
    fields = {"id": "f", "score": 0.9, "label": "blue", "source": SOURCE}
    return {k: v if rng.random() < 0.3 else random_json(rng, 2) for k, v in fields.items()
            if rng.random() < 0.6}  # fmt: skip


def fuzz_message(rng: random.Random) -> tuple[str, bytes]:
    if rng.random() < 0.8:
        name = rng.choice(COMMAND_NAMES)
    else:
        name = "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 20)))
    kind = rng.randrange(4)
    if kind == 0:
        payload = rng.randbytes(rng.choice([0, 1, 5, 40, 300]))
    elif kind == 1:
        payload = json.dumps(random_json(rng)).encode()
    elif kind == 2:
        payload = json.dumps(wrong_types(rng)).encode()
    else:
        text = json.dumps(wrong_types(rng))
        cut = rng.randrange(len(text) + 1)
        payload = (text[:cut] + rng.choice(['"', "}", ",", "NaN", "\\ud800", ""])).encode()
    return name, payload


def test_fuzzed_commands_leave_the_agent_answering_and_publishing(
    tmp_path: Path,
    broker: Broker,
    assets: Assets,
    mqtt_recorder: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(FUZZ_SEED)
    messages = [fuzz_message(rng) for _ in range(FUZZ_MESSAGES)]
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state")
    codes: dict[str, int] = {}
    with (
        caplog.at_level(logging.INFO),
        running_agent(write_config(tmp_path / "agent.yaml", cfg)),
        requester(broker) as req,
    ):
        run = online_run(rec)
        for start in range(0, len(messages), FUZZ_BATCH):
            sent = [
                req.send(name, payload) for name, payload in messages[start : start + FUZZ_BATCH]
            ]
            for corr in sent:
                reply = req.wait(corr)
                key = "ok" if reply["ok"] else reply["code"]
                codes[key] = codes.get(key, 0) + 1
        assert sum(codes.values()) == FUZZ_MESSAGES  # every one answered, once
        assert req.request("ping")["result"]["run"] == run
        n = len(results(rec))
        wait_results(rec, n + 5, run=run)
    # every refusal is one of the documented codes or the agent's own (bad_label, ...)
    assert "failed" not in codes, codes
    assert {"bad_json", "not_utf8", "bad_args", "unknown_command", "ok"} <= set(codes), codes
    refused = [r for r in caplog.records if r.name == "edge_agent.publish.commands"]
    assert len(refused) == FUZZ_MESSAGES - codes.get("ok", 0)  # the log is seen, once each
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert bad == [], [f"{r.name}: {r.getMessage()}" for r in bad[:5]]
