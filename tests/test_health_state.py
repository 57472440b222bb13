"""The online/degraded verdict: failed frames clear after degraded_clear_s of success, a held
condition (a camera down) clears the moment it is released, and each cause keeps its rule."""

from __future__ import annotations

from edge_agent.health.state import HealthState


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make() -> tuple[HealthState, list[str], Clock]:
    told: list[str] = []
    clock = Clock()
    return HealthState(told.append, clear_after_s=30.0, clock=clock), told, clock


def test_failed_frames_clear_only_after_the_delay() -> None:
    health, told, clock = make()
    health.failed()
    clock.t = 29.0
    health.succeeded()
    assert told == ["degraded"]
    clock.t = 30.0
    health.succeeded()
    assert told == ["degraded", "online"]


def test_a_held_cause_clears_at_once_when_released() -> None:
    health, told, _clock = make()
    health.hold("sources", "source(s) gate down")
    health.hold("sources", "source(s) gate, yard down")  # still degraded: told once
    assert told == ["degraded"] and health.held() == {"sources": "source(s) gate, yard down"}
    health.hold("sources", None)
    assert told == ["degraded", "online"] and health.held() == {}


def test_the_causes_are_independent() -> None:
    health, told, clock = make()
    health.hold("sources", "source(s) gate down")
    health.failed()
    clock.t = 31.0
    health.succeeded()  # frames are fine again, but the camera is still down
    assert health.state == "degraded"
    health.hold("sources", None)
    assert told == ["degraded", "online"]
    health.failed()  # a new failed frame: degraded, and held until the delay passes
    health.hold("sources", "source(s) gate down")
    health.hold("sources", None)
    assert health.state == "degraded"
    clock.t = 61.0
    health.succeeded()
    assert told == ["degraded", "online", "degraded", "online"]
