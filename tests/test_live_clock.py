"""LiveClock and ReconnectPolicy on scripted read timings (the real cameras are in
test_live_cameras.py): what is drained, what time a kept frame gets, when retries slow down."""

from __future__ import annotations

import random

import pytest

from edge_agent.live_clock import DRAIN_BUDGET_S, NO_PTS, LiveClock
from edge_agent.reconnect import JITTER, ReconnectPolicy

STEP = 1 / 15  # the test cameras' frame interval
T0 = 1_700_000_000.0  # wall clock at monotonic 0


class Stream:
    """Reads of a 15 fps camera whose frame k is taken at capture(k): buffered reads return in
    0.5 ms, live ones when the frame arrives (LATENCY after it was taken)."""

    LATENCY = 0.004

    def __init__(self, clock: LiveClock, pts: bool = True) -> None:
        self.clock = clock
        self.pts = pts
        self.now = 0.0  # monotonic
        self.k = 0  # next frame index

    def capture(self, k: int) -> float:
        return 10.0 + k * STEP  # the camera started 10 s before the agent opened it

    def read(self) -> tuple[float | None, float]:
        """(the clock's time for the frame, when it was really taken)."""
        started = self.now
        arrives = self.capture(self.k) + self.LATENCY
        self.now = max(self.now + 0.0005, arrives)
        pts = (self.k * 90000 * STEP) if self.pts else NO_PTS
        pos = self.k * STEP * 1000 if self.pts else self.k * 40.0  # MJPEG: assumed 25 fps
        ts = self.clock.stamp(started, self.now, T0 + self.now, pts, pos)
        taken = T0 + self.capture(self.k)
        self.k += 1
        return ts, taken


@pytest.mark.parametrize("pts", [True, False], ids=["rtsp-pts", "mjpeg-no-pts"])
def test_the_burst_after_an_open_is_drained_and_times_are_true(pts: bool) -> None:
    clock = LiveClock()
    clock.opened(15.0)
    cam = Stream(clock, pts)
    cam.now = cam.capture(27)  # opened 1.8 s into the stream: 27 frames buffered
    kept = [(ts, taken) for ts, taken in (cam.read() for _ in range(60)) if ts is not None]
    assert clock.drained >= 27  # every buffered frame, and the first read (it cannot be judged)
    assert len(kept) == 60 - clock.drained
    for ts, taken in kept:
        assert 0 <= ts - taken <= STEP, (ts, taken)  # never older than one frame interval


@pytest.mark.parametrize("pts", [True, False], ids=["rtsp-pts", "mjpeg-no-pts"])
def test_after_the_reader_pauses_the_backlog_is_drained(pts: bool) -> None:
    clock = LiveClock()
    clock.opened(15.0)
    cam = Stream(clock, pts)
    for _ in range(20):
        cam.read()
    drained = clock.drained
    cam.now += 2.0  # inference, a stopped process: 30 frames pile up in the socket
    results = [cam.read() for _ in range(60)]
    assert clock.drained - drained >= 29
    for ts, taken in results:
        if ts is not None:
            assert 0 <= ts - taken <= STEP


def test_a_decoder_that_never_catches_up_stops_draining_after_the_budget() -> None:
    clock = LiveClock()
    clock.opened(15.0)
    now, kept = 0.0, 0
    for k in range(400):  # every read returns at once: there is always a backlog
        ts = clock.stamp(now, now + 0.01, T0 + now, k * 6000.0, k * STEP * 1000)
        now += 0.01
        kept += ts is not None
    assert kept > 0 and clock.drained <= DRAIN_BUDGET_S / 0.01 + 1


def test_a_timestamp_jump_starts_the_delay_floor_over() -> None:
    clock = LiveClock()
    clock.opened(15.0)
    cam = Stream(clock)
    for _ in range(200):
        cam.read()
    # The camera restarts its clock at 0 on the same connection: presentation times go back.
    cam.now += STEP
    ts = clock.stamp(cam.now - STEP, cam.now, T0 + cam.now, 0.0, 0.0)
    assert ts == pytest.approx(T0 + cam.now, abs=1e-6)  # this read's time, not one 13 s in the past
    cam.now += STEP
    ts = clock.stamp(cam.now - STEP, cam.now, T0 + cam.now, 6000.0, STEP * 1000)
    assert ts == pytest.approx(T0 + cam.now, abs=1e-6)


def test_quick_retries_then_doubling_up_to_the_maximum() -> None:
    now = [0.0]
    policy = ReconnectPolicy(0.5, 8.0, 10.0, clock=lambda: now[0], rng=random.Random(1))
    delays = []
    while now[0] < 40:
        delay = policy.next_delay()
        delays.append((now[0], delay))
        now[0] += delay
    quick = [d for t, d in delays if t < 10.0]
    slow = [d for t, d in delays if t >= 10.0]
    assert all(0.5 * (1 - JITTER) <= d <= 0.5 * (1 + JITTER) for d in quick)
    assert len(quick) >= 16  # a camera back after 10 s is found within ~0.6 s
    assert slow[0] < slow[1] < slow[2] and max(slow) <= 8.0
    assert len(set(round(d, 6) for d in quick)) > 1  # jittered
    policy.reset()
    assert not policy.in_outage and policy.next_delay() <= 0.5 * (1 + JITTER)


def test_a_404_skips_the_quick_phase() -> None:
    now = [0.0]
    policy = ReconnectPolicy(0.5, 8.0, 60.0, clock=lambda: now[0], rng=random.Random(2))
    policy.next_delay(lasting=True)
    assert not policy.quick()
    assert [round(policy.next_delay() / d, 1) <= 1.2 for d in (1.0, 2.0, 4.0)] == [True] * 3
