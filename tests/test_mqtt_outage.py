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
    RESULT_TOPIC,
    STATUS_TOPIC,
    Agent,
    as_blocks,
    gaps,
    outbox_path,
    read_outbox,
    results_by_run,
    wait_until,
    write_agent_config,
)

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
    seq_at_down = max(seqs_of(rec, run1))
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
    # And the outage's results are really there: at the pace seen before it (a fair share of
    # FPS on a busy 2-core machine), less what the last commit interval and a second may hold.
    assert newest_seq - seq_at_down >= 0.5 * FPS * (t_kill - t_down) - FPS * (
        1.0 + COMMIT_INTERVAL_S
    ), (seq_at_down, newest_seq, t_kill - t_down)

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
    # One entry per publication: the subscriber's re-SUBSCRIBE after the broker's restart
    # also brings the retained copy of a summary it may already have had queued.
    summaries = [json.loads(b) for b in dict.fromkeys(m.payload for m in rec.on(DROPPED_TOPIC))]
    assert {s["run"] for s in summaries} == {run}
    assert sum(s["dropped"].get("result", 0) for s in summaries) == len(missing), (
        summaries,
        blocks,
    )
    assert summaries[-1]["total"]["result"] == len(missing)
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
