"""Probation: the rollback rules on made-up frames and times."""

from __future__ import annotations

import pytest

from edge_agent.updates.probation import Baseline, Probation

BASE = Baseline(latency_ms_p50=20.0, detection_rate=1.5)


def _feed(
    p: Probation, frames: int, latency: float, detections: int, t0: float = 0.0
) -> str | None:
    reason = None
    for i in range(frames):
        reason = p.observe(latency, detections, True, t0 + i * 0.1)
    return reason


def test_a_good_model_passes_after_the_window() -> None:
    p = Probation(BASE, window_s=10, min_frames=20)
    assert _feed(p, 101, 25.0, 2) is None  # t = 0 .. 10 s
    assert not p.passed(9.9)
    assert p.passed(10.0)


def test_nan_rolls_back_at_once() -> None:
    p = Probation(BASE, window_s=10, min_frames=20)
    _feed(p, 3, 20.0, 1)
    assert p.observe(20.0, 1, False, 0.4) == "the new model output NaN or infinity (frame 4)"
    assert p.observe(20.0, 1, True, 0.5) is not None  # the verdict stays
    assert not p.passed(100.0)


def test_latency_over_twice_the_baseline_after_min_frames() -> None:
    p = Probation(BASE, window_s=60, min_frames=10)
    assert _feed(p, 9, 45.0, 1) is None  # too few frames to judge
    reason = p.observe(45.0, 1, True, 1.0)
    assert reason == "latency p50 45.0 ms is over 2x the previous model's 20.0 ms"


def test_latency_just_under_twice_is_kept() -> None:
    p = Probation(BASE, window_s=5, min_frames=10)
    assert _feed(p, 60, 39.9, 1) is None
    assert p.passed(6.0)


def test_a_few_slow_frames_do_not_count_against_the_median() -> None:
    p = Probation(BASE, window_s=60, min_frames=10)
    assert _feed(p, 3, 500.0, 1) is None  # warm-up
    assert _feed(p, 20, 21.0, 1, t0=1.0) is None


def test_detecting_nothing_over_the_window_rolls_back() -> None:
    p = Probation(BASE, window_s=10, min_frames=20)
    assert _feed(p, 100, 20.0, 0) is None  # t up to 9.9 s: window not over
    reason = p.observe(20.0, 0, True, 10.0)
    assert reason == (
        "the new model detected nothing in 10 s (101 frames) where the previous model "
        "found 1.50 per frame"
    )


def test_passed_also_applies_the_collapse_rule() -> None:
    p = Probation(BASE, window_s=10, min_frames=20)
    _feed(p, 50, 20.0, 0)  # t up to 4.9 s
    assert not p.passed(12.0)
    assert p.reason is not None and "detected nothing" in p.reason


def test_nothing_detected_is_fine_when_the_old_model_saw_little() -> None:
    p = Probation(Baseline(20.0, 0.1), window_s=10, min_frames=20)
    assert _feed(p, 101, 20.0, 0) is None
    assert p.passed(10.0)


def test_one_detection_is_not_a_collapse() -> None:
    p = Probation(BASE, window_s=10, min_frames=20)
    _feed(p, 50, 20.0, 0)
    p.observe(20.0, 1, True, 5.0)
    _feed(p, 60, 20.0, 0, t0=5.1)
    assert p.passed(11.0)


def test_too_few_frames_keep_it_on_probation() -> None:
    p = Probation(BASE, window_s=10, min_frames=20)
    _feed(p, 5, 20.0, 1)
    assert not p.passed(1000.0) and p.reason is None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="window_s must be > 0"):
        Probation(BASE, window_s=0, min_frames=1)
