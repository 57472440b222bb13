"""Fault injection on the agent's broker link (issue 12): ``edge-agent run`` publishes results
at 10/s through a FaultProxy (tests/helpers/proxy.py) while the test resets the link,
blackholes it (only the agent's 5 s keepalive can notice), refuses new connections, and
restarts the broker itself with SIGTERM and with SIGKILL. The subscriber talks to mosquitto
directly, with a persistent session at QoS 1.

What must hold: no result of the run is lost (every seq from 0 to the last arrives), repeats
are exact duplicates, the backlog is drained within 30 s of the last fault, and after every
fault the status says ``online``, with a ts newer than the fault, within 2 s of the reconnect.

The run lasts ``EDGESIGHT_FAULT_SECONDS`` (default 60): the faults repeat in cycles while time
is left. The measured figures are printed (pytest -s shows them).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.mqtt import Broker
from tests.helpers.outage import (
    BASE,
    KEEPALIVE_S,
    RECONNECT_MAX_DELAY_S,
    RESULT_TOPIC,
    STATUS_TOPIC,
    Agent,
    Arrival,
    TimedRecorder,
    as_blocks,
    gaps,
    write_agent_config,
)
from tests.helpers.proxy import FaultProxy
from tests.helpers.waiting import wait_until

FPS = 10
#: The run's length unless EDGESIGHT_FAULT_SECONDS says otherwise, s.
DEFAULT_SECONDS = 60.0
ENV_SECONDS = "EDGESIGHT_FAULT_SECONDS"
#: Calm time before the first fault and between two, s: the link settles, results flow.
CALM_S = 4.0
#: A blackhole must outlast what paho needs to notice it: no PINGRESP within a keepalive of
#: its PINGREQ, which it sends a keepalive after the last packet in (~2 x keepalive).
BLACKHOLE_S = 3 * KEEPALIVE_S
#: How long new connections are refused, and the broker stays down, s.
REFUSE_S = 4.0
BROKER_DOWN_S = 2.0
#: The contract under test (issue 12): the backlog drained this soon after the last fault,
#: the online status seen this soon after the reconnect, s.
DRAIN_LIMIT_S = 30.0
STATUS_LIMIT_S = 2.0
#: The agent's reconnect after a fault ends: its longest wait, plus a TCP connect and the
#: CONNACK on a loaded 2-core machine. A bound on behaviour (it does reconnect), not speed.
RECONNECT_LIMIT_S = RECONNECT_MAX_DELAY_S + 2.0
#: Longest wait for anything the test expects (a bound on a wait), s.
WAIT_S = 30.0


@dataclass
class Fault:
    """One fault: its name and when (time.time()) it began and ended."""

    name: str
    began: float
    ended: float = 0.0


class Injector:
    """Runs the faults and keeps their moments (the test's clock). A fault has ended when
    its lifting begins: a broker may accept the agent before ``start()`` has returned."""

    def __init__(self, proxy: FaultProxy, broker: Broker) -> None:
        self.proxy = proxy
        self.broker = broker
        self.faults: list[Fault] = []

    def _run(
        self, name: str, apply: Callable[[], None], hold_s: float, lift: Callable[[], None]
    ) -> None:
        fault = Fault(name, time.time())
        apply()
        time.sleep(hold_s)
        fault.ended = time.time()
        lift()
        self.faults.append(fault)

    def reset(self) -> None:
        self._run("reset", lambda: None, 0.0, self.proxy.reset)

    def blackhole(self) -> None:
        self._run(
            "blackhole",
            lambda: self.proxy.blackhole(True),
            BLACKHOLE_S,
            lambda: self.proxy.blackhole(False),
        )

    def refuse(self) -> None:
        def apply() -> None:
            self.proxy.refuse(True)
            self.proxy.reset()  # the open link goes; every new attempt is refused

        self._run("refuse", apply, REFUSE_S, lambda: self.proxy.refuse(False))

    def broker_sigterm(self) -> None:
        self._run("broker SIGTERM", self.broker.stop, BROKER_DOWN_S, self.broker.start)

    def broker_sigkill(self) -> None:
        self._run("broker SIGKILL", self.broker.kill, BROKER_DOWN_S, self.broker.start)

    def cycle(self) -> list[tuple[Callable[[], None], float]]:
        """The faults in the order they are played, each with how long it lasts, s.

        SIGTERM before SIGKILL: mosquitto saves its sessions only at a clean exit, so the
        killed broker comes back with the subscriber's session (and subscription) from it.
        """
        return [
            (self.reset, 0.0),
            (self.blackhole, BLACKHOLE_S),
            (self.refuse, REFUSE_S),
            (self.broker_sigterm, BROKER_DOWN_S + 1.0),  # + the broker's stop and start
            (self.broker_sigkill, BROKER_DOWN_S + 1.0),
        ]


@pytest.fixture
def agent_proc() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.ensure_dead()


def run_seconds() -> float:
    raw = os.environ.get(ENV_SECONDS, "")
    if not raw:
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_SECONDS} must be a number of seconds, got {raw!r}") from None
    if seconds < DEFAULT_SECONDS:
        raise ValueError(f"{ENV_SECONDS} may raise the run above {DEFAULT_SECONDS:g} s, got {raw}")
    return seconds


def story(rec: TimedRecorder, faults: list[Fault]) -> str:
    """The faults and the status messages in time order, for an assertion message."""
    t0 = faults[0].began if faults else 0.0
    lines = [(f.began, f"{f.began - t0:8.2f} {f.name} until {f.ended - t0:.2f}") for f in faults]
    for a in rec.timed(STATUS_TOPIC):
        s = a.json()
        lines.append((a.at, f"{a.at - t0:8.2f} got {s['state']} made {s['ts'] - t0:.2f}"))
    return "\n".join(text for _, text in sorted(lines))


def drained_at(results: list[Arrival], upto_seq: int) -> float | None:
    """When every seq from 0 to ``upto_seq`` had arrived (the latest first arrival among
    them), or None if one never did."""
    first: dict[int, float] = {}
    for a in results:
        first.setdefault(a.json()["seq"], a.at)
    if any(s not in first for s in range(upto_seq + 1)):
        return None
    return max(first[s] for s in range(upto_seq + 1))


def test_no_result_lost_through_link_and_broker_faults(
    tmp_path: Path, persistent_broker: Broker, agent_proc: list[Agent]
) -> None:
    seconds = run_seconds()
    rec = TimedRecorder(persistent_broker, f"{BASE}/#", persistent_session=True)
    proxy = FaultProxy(persistent_broker.host, persistent_broker.port).start()
    try:
        agent = Agent(write_agent_config(tmp_path, proxy.port, fps=FPS), tmp_path / "agent.log")
        agent_proc.append(agent)
        assert rec.wait_for(lambda: len(rec.on(RESULT_TOPIC)) >= FPS, WAIT_S), agent.stderr()
        run = rec.json(RESULT_TOPIC)[0]["run"]
        inject = Injector(proxy, persistent_broker)

        # Faults in turn, each after a calm spell, while the next one still fits in the run.
        started = time.monotonic()
        for act, lasts_s in itertools.cycle(inject.cycle()):
            if time.monotonic() - started + CALM_S + lasts_s > seconds:
                break
            time.sleep(CALM_S)
            act()
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        last = inject.faults[-1]

        # The backlog drains: a result captured after the last fault ended arrives, and with it
        # (results go out in order) every seq captured before; when the last of those came is
        # the drain's end.
        def results() -> list[Arrival]:
            return [a for a in rec.timed(RESULT_TOPIC) if a.json()["run"] == run]

        def newer() -> list[int]:
            return [a.json()["seq"] for a in results() if a.json()["ts"] > last.ended]

        assert wait_until(lambda: bool(newer()), DRAIN_LIMIT_S + 5), (
            f"no result made after the last fault arrived\n{story(rec, inject.faults)}\n"
            f"{agent.stderr()[-3000:]}"
        )
        made_before = min(newer()) - 1
        wait_until(lambda: drained_at(results(), made_before) is not None, DRAIN_LIMIT_S + 5)
        done = drained_at(results(), made_before)
        seqs = [a.json()["seq"] for a in results()]
        assert done is not None, (
            f"seqs missing up to {made_before}",
            as_blocks(gaps(seqs, made_before)),
        )
        drain_s = done - last.ended
        assert drain_s <= DRAIN_LIMIT_S, drain_s

        # The retained status says online now, from after the last fault.
        late = TimedRecorder(persistent_broker, STATUS_TOPIC, persistent_session=False)
        try:
            assert late.wait_for(lambda: bool(late.on(STATUS_TOPIC)))
            kept = late.on(STATUS_TOPIC)[0]
            assert kept.retain and json.loads(kept.payload)["state"] == "online", (
                f"{story(rec, inject.faults)}\nretained now: {kept.payload!r}\n"
                f"{agent.stderr()[-3000:]}"
            )
            assert json.loads(kept.payload)["ts"] > last.ended
        finally:
            late.close()

        assert agent.stop() == 0, agent.stderr()[-3000:]
        top = max(seqs)
        assert wait_until(lambda: not gaps([a.json()["seq"] for a in results()], top), WAIT_S)
    finally:
        proxy.stop()
        rec.close()

    # 0 lost: every seq of the run from 0 to the last; repeats carry the very same payload.
    arrivals = results()
    seqs = [a.json()["seq"] for a in arrivals]
    assert gaps(seqs) == [], as_blocks(gaps(seqs))
    by_seq: dict[int, set[bytes]] = {}
    for a in arrivals:
        by_seq.setdefault(a.json()["seq"], set()).add(a.payload)
    assert all(len(v) == 1 for v in by_seq.values()), [s for s, v in by_seq.items() if len(v) > 1]

    # After each fault: an online status made after it ended (the reconnect's), seen by the
    # subscriber within 2 s of being made, and made soon after the fault ended. And what was
    # made until the fault ended was all delivered within the drain limit (not only after the
    # last fault: after each, the longest blackhole holding the largest backlog).
    statuses = [(a, a.json()) for a in rec.timed(STATUS_TOPIC)]
    made = [(a.json()["seq"], a.json()["ts"]) for a in arrivals]
    rows = []
    for fault in inject.faults:
        after = [(a, s) for a, s in statuses if s["state"] == "online" and s["ts"] >= fault.ended]
        assert after, f"no online status after the {fault.name} fault"
        seen, status = min(after, key=lambda x: x[1]["ts"])
        reconnect_s = status["ts"] - fault.ended
        online_s = seen.at - status["ts"]
        before = min(seq for seq, ts in made if ts > fault.ended) - 1
        held = len({seq for seq, ts in made if fault.began <= ts <= fault.ended})
        drained = drained_at(arrivals, before)
        assert drained is not None  # no gaps, checked above
        rows.append((fault, reconnect_s, online_s, held, drained - fault.ended))
        assert reconnect_s <= RECONNECT_LIMIT_S, (fault.name, reconnect_s)
        assert online_s <= STATUS_LIMIT_S, (fault.name, online_s)
        assert drained - fault.ended <= DRAIN_LIMIT_S, (fault.name, drained - fault.ended)
        assert status["run"] == run

    duplicates = len(seqs) - len(set(seqs))
    print(f"\nfault run: {seconds:g} s, {top + 1} results, {duplicates} duplicates")
    print(f"backlog drained {drain_s:.2f} s after the last fault ({last.name})")
    print(
        f"{'fault':<16}{'lasted s':>10}{'reconnect s':>13}{'online seen s':>15}"
        f"{'made in fault':>15}{'drained s':>11}"
    )
    for fault, reconnect_s, online_s, held, drain in rows:
        print(
            f"{fault.name:<16}{fault.ended - fault.began:>10.2f}{reconnect_s:>13.2f}"
            f"{online_s:>15.3f}{held:>15d}{drain:>11.2f}"
        )
