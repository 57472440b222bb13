"""The agent's MQTT side through an outage, a crash and a damaged outbox (issue 12): a real
``edge-agent run`` subprocess, a real mosquitto with persistence, a persistent QoS 1
subscriber. What the disk outbox promises (docs/outbox.md): results made while the broker is
away survive a SIGKILL and go out, in order, under their own run id, after the next start; when
the outbox is full the oldest go and the retained ``dropped`` summary says exactly how many.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.outage import (
    BASE,
    DROPPED_TOPIC,
    KEEPALIVE_S,
    RESULT_TOPIC,
    STATUS_TOPIC,
    Agent,
    as_blocks,
    gaps,
    outbox_path,
    read_outbox,
    results_by_run,
    write_agent_config,
)
from tests.helpers.proxy import FaultProxy
from tests.helpers.waiting import wait_until

#: Results per second the clip is paced at (test 1, 3); the outbox-full test goes faster.
FPS = 10
FAST_FPS = 30
#: The outbox's commit interval (the default): a SIGKILL loses at most this much, s.
COMMIT_INTERVAL_S = 1.0
#: How long the broker is away before the agent is killed, s.
OUTAGE_S = 3.0
#: Longest wait for anything the test expects to happen (a bound, not a measurement), s.
WAIT_S = 30.0


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Agents a test starts; killed at teardown whatever happened."""
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.ensure_dead()


def start(agents: list[Agent], config: Path, log: Path) -> Agent:
    agent = Agent(config, log)
    agents.append(agent)
    return agent


def result_payloads(rec: Recorder) -> list[dict[str, Any]]:
    return rec.json(RESULT_TOPIC)


def first_run(rec: Recorder) -> str:
    return str(result_payloads(rec)[0]["run"])


def seqs_of(rec: Recorder, run: str) -> list[int]:
    return results_by_run(result_payloads(rec)).get(run, [])


def test_results_made_in_an_outage_survive_a_sigkill(
    tmp_path: Path,
    persistent_broker: Broker,
    mqtt_recorder: Callable[..., Recorder],
    agents: list[Agent],
) -> None:
    rec = mqtt_recorder(persistent_broker, f"{BASE}/#", persistent_session=True)
    config = write_agent_config(tmp_path, persistent_broker.port, fps=FPS)
    agent = start(agents, config, tmp_path / "agent1.log")
    assert rec.wait_for(lambda: len(result_payloads(rec)) >= 2 * FPS, WAIT_S), agent.stderr()
    run1 = first_run(rec)

    # The outage: the broker goes (cleanly: the subscriber's session and queue are saved).
    t_down = time.time()
    persistent_broker.stop()
    time.sleep(OUTAGE_S)
    t_kill = time.time()
    agent.kill()

    # What the killed agent had made durable: the outage's results, read from its file.
    rows = read_outbox(outbox_path(tmp_path))
    durable = [json.loads(r.payload) for r in rows if r.kind == "result"]
    assert durable, "the outbox holds no result after an outage of seconds"
    assert {p["run"] for p in durable} == {run1}
    durable_seqs = [p["seq"] for p in durable]
    assert durable_seqs == sorted(durable_seqs), "the outbox is not in production order"
    newest_seq = max(durable_seqs)
    # At most about one commit interval (plus the time a put takes to be picked up) was lost.
    newest_made = max(r.created for r in rows if r.kind == "result")
    assert t_kill - newest_made <= 1.0 + COMMIT_INTERVAL_S, (t_kill, newest_made)
    # No hole inside the outbox, and it reaches what the agent had made by the kill, less
    # about a second and a commit interval. What it had made is counted from the pace of the
    # results seen before the outage (capture times), not assumed to be FPS.
    assert durable_seqs == list(range(durable_seqs[0], newest_seq + 1)), as_blocks(durable_seqs)
    before = [p for p in result_payloads(rec) if p["run"] == run1]
    first, last = min(before, key=lambda p: p["seq"]), max(before, key=lambda p: p["seq"])
    pace = (last["seq"] - first["seq"]) / (last["ts"] - first["ts"])
    made_by_kill = last["seq"] + pace * (t_kill - last["ts"])
    assert newest_seq >= made_by_kill - pace * (1.0 + COMMIT_INTERVAL_S) - 1, (
        newest_seq,
        made_by_kill,
        pace,
    )

    persistent_broker.start()
    agent2 = start(agents, config, tmp_path / "agent2.log")
    # Everything of run 1 up to the newest durable result arrives, after the restart.
    assert rec.wait_for(lambda: not gaps(seqs_of(rec, run1), newest_seq), WAIT_S), (
        as_blocks(gaps(seqs_of(rec, run1), newest_seq)),
        agent2.stderr()[-3000:],
    )
    assert rec.wait_for(lambda: len(results_by_run(result_payloads(rec))) == 2, WAIT_S)
    assert agent2.stop() == 0, agent2.stderr()[-3000:]

    runs = results_by_run(result_payloads(rec))
    run2 = next(r for r in runs if r != run1)
    got1 = runs[run1]
    # Contiguous from 0, nothing beyond what was made: duplicates allowed, gaps not.
    assert gaps(got1) == [], as_blocks(gaps(got1))
    assert max(got1) == newest_seq, (max(got1), newest_seq)
    # The new run counts from 0 again, under its own id, and its status says so.
    assert min(runs[run2]) == 0
    assert run2 in {s.get("run") for s in rec.json(STATUS_TOPIC)}
    # The second start said it had a backlog to send.
    assert "from before; sending them first" in agent2.stderr()
    print(
        f"\noutage {t_kill - t_down:.1f} s then SIGKILL: {len(durable)} results durable "
        f"(seqs {durable_seqs[0]}..{newest_seq}), newest made {t_kill - newest_made:.2f} s "
        f"before the kill, ~{made_by_kill:.0f} made by then; run 1 seqs 0..{max(got1)} arrived "
        f"({len(got1) - len(set(got1))} duplicates)"
    )


def test_a_full_outbox_drops_the_oldest_and_says_how_many(
    tmp_path: Path,
    persistent_broker: Broker,
    mqtt_recorder: Callable[..., Recorder],
    agents: list[Agent],
) -> None:
    rec = mqtt_recorder(persistent_broker, f"{BASE}/#", persistent_session=True)
    outbox = {"max_bytes": 64 * 1024}  # the minimum: ~100 results of ~600 bytes
    config = write_agent_config(tmp_path, persistent_broker.port, fps=FAST_FPS, outbox=outbox)
    agent = start(agents, config, tmp_path / "agent.log")
    assert rec.wait_for(lambda: len(result_payloads(rec)) >= FAST_FPS, WAIT_S), agent.stderr()
    run = first_run(rec)
    size = max(len(m.payload) + len(m.topic) for m in rec.on(RESULT_TOPIC))
    # Long enough that what is made overflows the outbox at least twice over.
    outage_s = 2 * 64 * 1024 / size / FAST_FPS + 2.0

    persistent_broker.stop()
    seq_at_down = max(seqs_of(rec, run))
    time.sleep(outage_s)
    persistent_broker.start()

    assert rec.wait_for(lambda: bool(rec.on(DROPPED_TOPIC)), WAIT_S), agent.stderr()[-3000:]
    # Let the backlog go out and a few live results follow it, then stop cleanly.
    assert rec.wait_for(lambda: max(seqs_of(rec, run)) > seq_at_down + outage_s * FAST_FPS, WAIT_S)
    assert agent.stop() == 0, agent.stderr()[-3000:]

    seqs = seqs_of(rec, run)
    missing = gaps(seqs)
    assert missing, "nothing was dropped: the outage did not fill the outbox"
    # The dropped ones are one block, the oldest of the outage: those right after the last
    # result the broker got before it went.
    blocks = as_blocks(missing)
    assert len(blocks) == 1 and blocks[0][0] > seq_at_down, (blocks, seq_at_down)
    summaries = unique_summaries(rec)
    assert {s["run"] for s in summaries} == {run}
    assert sum(s["dropped"].get("result", 0) for s in summaries) == len(missing), (
        summaries,
        blocks,
    )
    assert summaries[-1]["total"]["result"] == len(missing)
    print(
        f"\noutage {outage_s:.1f} s at {FAST_FPS} fps, 64 KiB outbox: seqs {blocks} dropped, "
        f"summary {summaries[-1]['total']}"
    )
    assert "dropped" in agent.stderr()

    # The summary is retained: a subscriber that comes later gets it at once.
    late = Recorder(persistent_broker, DROPPED_TOPIC, persistent_session=False)
    try:
        assert late.wait_for(lambda: bool(late.on(DROPPED_TOPIC)))
        (kept,) = late.on(DROPPED_TOPIC)
        assert kept.retain and kept.qos == 1
        assert json.loads(kept.payload)["total"]["result"] == len(missing)
    finally:
        late.close()


def unique_summaries(rec: Recorder) -> list[dict[str, Any]]:
    """The ``dropped`` summaries, one per publication: a re-SUBSCRIBE after the broker's
    restart also brings the retained copy of one the subscriber may have had queued."""
    return [json.loads(b) for b in dict.fromkeys(m.payload for m in rec.on(DROPPED_TOPIC))]


def test_a_full_outbox_behind_a_dead_link_counts_only_what_never_arrived(
    tmp_path: Path,
    persistent_broker: Broker,
    mqtt_recorder: Callable[..., Recorder],
    agents: list[Agent],
) -> None:
    """A link that dies silently (blackhole) is noticed only by keepalive, ~2 x 5 s; until
    then the sender keeps handing paho its window of 100 messages, which paho holds and sends
    again after the reconnect (persistent session). The outbox's size cap drops the oldest
    rows, those 100 included, and counts them as dropped although they do arrive.

    Seen: ``dropped.result`` 335 with 244 seqs missing (30 fps, 64 KiB, 15 s blackhole). Fix
    (edge_agent/publish): the cap must not drop rows handed to paho. E.g. the sender tells
    the outbox its highest handed id (``Outbox.hold(last_id)``, reset by ``Sender.restart``),
    and ``Outbox._write``/``_drop_mem`` drop only rows above it; the file may then exceed
    ``max_bytes`` by at most one window, which docs/outbox.md should say.
    """
    rec = mqtt_recorder(persistent_broker, f"{BASE}/#", persistent_session=True)
    outbox = {"max_bytes": 64 * 1024}
    with FaultProxy(persistent_broker.host, persistent_broker.port) as proxy:
        config = write_agent_config(tmp_path, proxy.port, fps=FAST_FPS, outbox=outbox)
        agent = start(agents, config, tmp_path / "agent.log")
        assert rec.wait_for(lambda: len(result_payloads(rec)) >= FAST_FPS, WAIT_S)
        run = first_run(rec)
        proxy.blackhole(True)
        time.sleep(3 * KEEPALIVE_S)  # past keepalive's notice; the outbox overflows meanwhile
        proxy.blackhole(False)
        assert rec.wait_for(lambda: bool(rec.on(DROPPED_TOPIC)), WAIT_S), agent.stderr()
        top = max(seqs_of(rec, run))
        assert rec.wait_for(lambda: max(seqs_of(rec, run)) > top + FAST_FPS, WAIT_S)
        assert agent.stop() == 0, agent.stderr()[-3000:]

    missing = gaps(seqs_of(rec, run))
    assert len(as_blocks(missing)) == 1, as_blocks(missing)
    summaries = unique_summaries(rec)
    assert sum(s["dropped"].get("result", 0) for s in summaries) == len(missing), (
        summaries,
        as_blocks(missing),
    )


def test_a_damaged_outbox_is_moved_aside_and_the_agent_publishes(
    tmp_path: Path,
    broker: Broker,
    mqtt_recorder: Callable[..., Recorder],
    agents: list[Agent],
) -> None:
    rec = mqtt_recorder(broker, f"{BASE}/#")
    db = outbox_path(tmp_path)
    db.parent.mkdir(parents=True)
    garbage = b"this is not a database\x00\xff" * 400
    db.write_bytes(garbage)
    config = write_agent_config(tmp_path, broker.port, fps=FPS)
    agent = start(agents, config, tmp_path / "agent.log")

    assert rec.wait_for(lambda: len(result_payloads(rec)) >= 5, WAIT_S), agent.stderr()
    assert agent.stop() == 0, agent.stderr()
    seqs = [p["seq"] for p in result_payloads(rec)]
    assert gaps(seqs) == [] and seqs[0] == 0

    aside = [p for p in db.parent.iterdir() if ".damaged-" in p.name]
    assert [p.name.startswith("outbox.db.damaged-") for p in aside] == [True], aside
    assert aside[0].read_bytes() == garbage  # moved, not rewritten
    err = agent.stderr()
    assert "damaged" in err and str(aside[0]) in err, err
    assert wait_until(lambda: db.exists(), 1.0)  # a fresh outbox in its place
