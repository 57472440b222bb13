"""The thermal governor, driven by a fake sysfs tree and a fake vcgencmd."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_agent.config.thermal import ThermalConfig
from edge_agent.health.thermal import ThermalGovernor, find_zone, pace, parse_throttled

CHECK_S = 10.0


def make_zone(root: Path, n: int, kind: str, temp_c: float | str) -> Path:
    zone = root / f"thermal_zone{n}"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text(kind + "\n")
    set_temp(zone / "temp", temp_c)
    return zone / "temp"


def set_temp(temp_file: Path, temp_c: float | str) -> None:
    text = temp_c if isinstance(temp_c, str) else str(round(temp_c * 1000))
    temp_file.write_text(text + "\n")


def no_vcgencmd() -> str | None:
    return None


def fake_vcgencmd(answer: list[str]) -> Callable[[], str | None]:
    """A vcgencmd whose answer the test changes through ``answer[0]``."""
    return lambda: answer[0]


def governor(
    root: Path, vcgencmd: Callable[[], str | None] = no_vcgencmd, **cfg: object
) -> ThermalGovernor:
    return ThermalGovernor(ThermalConfig(**cfg), sys_root=root, vcgencmd=vcgencmd)  # type: ignore[arg-type]


def poll_steps(
    gov: ThermalGovernor, temp_file: Path, temps: list[float], start: float = 0.0
) -> list[float]:
    """The factor after one check at each temperature, a check period apart from ``start``."""
    factors = []
    for i, t in enumerate(temps):
        set_temp(temp_file, t)
        factors.append(gov.poll(start + i * CHECK_S).factor)
    return factors


def test_steps_down_as_the_zone_heats_past_the_limit(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 60.0)
    gov = governor(tmp_path)
    assert poll_steps(gov, temp, [60, 75, 80, 83.5, 84, 85, 86]) == [
        1.0, 1.0, 0.5, 0.25, 0.125, 0.125, 0.125,
    ]  # fmt: skip
    state = gov.state
    assert state.temp_c == 86.0 and not state.throttled
    assert state.reason == "cpu 86.0 °C >= limit 80 °C"


def test_reason_and_changed_on_each_step(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 83.5)
    gov = governor(tmp_path)
    first = gov.poll(0.0)
    assert (first.factor, first.changed, first.reason) == (0.5, True, "cpu 83.5 °C >= limit 80 °C")
    set_temp(temp, 75.0)  # in the band
    held = gov.poll(CHECK_S)
    assert (held.factor, held.changed) == (0.5, False)
    assert "holding" in held.reason


def test_holds_in_the_band_then_steps_up_when_cool(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 90.0)
    gov = governor(tmp_path)
    temps = [90, 90, 90, 79, 71, 70, 65, 65, 65, 65]
    assert poll_steps(gov, temp, temps) == [
        0.5, 0.25, 0.125, 0.125, 0.125, 0.25, 0.5, 1.0, 1.0, 1.0,
    ]  # fmt: skip
    assert gov.state.reason == "cool (65.0 °C)"


def test_min_factor_that_is_not_a_power_of_step(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 90.0)
    gov = governor(tmp_path, step=0.3, min_factor=0.2)
    factors = poll_steps(gov, temp, [90, 90, 90, 60, 60, 60])
    assert factors[:3] == pytest.approx([0.3, 0.2, 0.2])
    assert factors[3:] == pytest.approx([0.2 / 0.3, 1.0, 1.0])
    assert factors[-1] == 1.0


@pytest.mark.parametrize("bits", ["0x1", "0x2", "0x4", "0x8", "0x50005"])
def test_current_throttling_steps_down_even_when_cool(tmp_path: Path, bits: str) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 50.0)
    answer = [f"throttled={bits}\n"]
    gov = governor(tmp_path, fake_vcgencmd(answer))
    assert poll_steps(gov, temp, [50, 50]) == [0.5, 0.25]
    state = gov.state
    assert state.throttled and state.reason == f"Pi reports throttling ({bits})"
    answer[0] = "throttled=0x0\n"
    assert poll_steps(gov, temp, [50, 50], start=2 * CHECK_S) == [0.5, 1.0]


@pytest.mark.parametrize("bits", ["0x10000", "0x20000", "0x40000", "0x80000", "0xf0000"])
def test_has_occurred_bits_alone_do_not_slow_down(tmp_path: Path, bits: str) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 50.0)
    gov = governor(tmp_path, fake_vcgencmd([f"throttled={bits}"]))
    assert poll_steps(gov, temp, [50, 50]) == [1.0, 1.0]
    assert not gov.state.throttled


def test_vcgencmd_alone_is_a_sensor(tmp_path: Path) -> None:
    gov = governor(tmp_path / "no-zones", fake_vcgencmd(["throttled=0x4"]))
    state = gov.poll(0.0)
    assert (state.temp_c, state.throttled, state.factor) == (None, True, 0.5)


def test_no_sensor_means_full_speed(tmp_path: Path) -> None:
    gov = governor(tmp_path)  # an empty thermal folder, no vcgencmd
    state = gov.poll(0.0)
    assert (state.temp_c, state.throttled, state.factor, state.reason) == (
        None, False, 1.0, "no sensor",
    )  # fmt: skip


def test_disabled_never_reads(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 95.0)
    gov = governor(tmp_path, enabled=False)
    assert poll_steps(gov, temp, [95, 95]) == [1.0, 1.0]
    assert gov.state.temp_c is None


@pytest.mark.parametrize("garbage", ["", "hot", "-273150", "0x7fff"])
def test_garbage_temperature_is_unknown_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: str
) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 90.0)
    gov = governor(tmp_path)
    assert gov.poll(0.0).factor == 0.5
    caplog.set_level(logging.WARNING, logger="edge_agent.health.thermal")
    set_temp(temp, garbage)
    states = [gov.poll(CHECK_S * i) for i in range(1, 4)]
    assert [s.factor for s in states] == [0.5, 0.5, 0.5]  # unknown holds: neither hot nor cool
    assert all(s.temp_c is None and "unknown" in s.reason for s in states)
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1


def test_unreadable_zone_file_and_broken_vcgencmd_are_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> str | None:
        raise RuntimeError("mailbox gone")

    caplog.set_level(logging.WARNING, logger="edge_agent.health.thermal")
    gov = governor(tmp_path, broken, thermal_zone=str(tmp_path / "missing" / "temp"))
    states = [gov.poll(CHECK_S * i) for i in range(3)]
    assert [s.factor for s in states] == [1.0, 1.0, 1.0]
    assert states[-1].reason == "temperature unknown: holding"
    assert len(caplog.records) == 2  # one for the zone, one for vcgencmd, not one per poll


def test_garbage_vcgencmd_answer_is_unknown(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 50.0)
    gov = governor(tmp_path, fake_vcgencmd(['error=1 error_msg="Command not registered"']))
    assert poll_steps(gov, temp, [50]) == [1.0]
    assert not gov.state.throttled


def test_polls_between_checks_return_the_last_state(tmp_path: Path) -> None:
    temp = make_zone(tmp_path, 0, "cpu-thermal", 85.0)
    gov = governor(tmp_path, check_every_s=CHECK_S)
    assert gov.poll(100.0).factor == 0.5
    for now in (100.0, 101.0, 109.9):
        state = gov.poll(now)
        assert (state.factor, state.changed) == (0.5, False)
    set_temp(temp, 60.0)
    assert gov.poll(105.0).temp_c == 85.0  # not read again yet
    state = gov.poll(110.0)
    assert (state.temp_c, state.factor, state.changed) == (60.0, 1.0, True)


def test_zone_choice_prefers_the_cpu_type_over_a_hotter_zone(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "acpitz", 95.0)
    cpu = make_zone(tmp_path, 1, "x86_pkg_temp", 50.0)
    assert find_zone(tmp_path) == cpu


@pytest.mark.parametrize("kind", ["cpu-thermal", "CPU-therm", "soc_thermal", "x86_pkg_temp"])
def test_each_cpu_zone_type_is_known(tmp_path: Path, kind: str) -> None:
    make_zone(tmp_path, 0, "GPU-therm", 70.0)
    cpu = make_zone(tmp_path, 2, kind, 40.0)
    assert find_zone(tmp_path) == cpu


def test_zone_choice_falls_back_to_the_hottest(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "acpitz", 40.0)
    hottest = make_zone(tmp_path, 1, "pch_cannonlake", 60.0)
    make_zone(tmp_path, 10, "iwlwifi_1", "garbage")
    assert find_zone(tmp_path) == hottest
    assert find_zone(tmp_path / "nothing") is None


def test_configured_zone_wins(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "cpu-thermal", 50.0)
    other = make_zone(tmp_path / "elsewhere", 5, "board", 82.0)
    gov = governor(tmp_path, thermal_zone=str(other))
    assert gov.poll(0.0).temp_c == 82.0


def test_parse_throttled() -> None:
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    with pytest.raises(ValueError, match=r"expected 'throttled=0x\.\.\.'"):
        parse_throttled("volts=1.2V")


# --- config ---------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = ThermalConfig()
    assert (cfg.enabled, cfg.limit_c, cfg.resume_c, cfg.step, cfg.min_factor) == (
        True, 80.0, 70.0, 0.5, 0.125,
    )  # fmt: skip
    assert (cfg.check_every_s, cfg.thermal_zone) == (10.0, None)
    assert all(f.description for f in ThermalConfig.model_fields.values())


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"resume_c": 80.0}, "resume_c", "must be below limit_c (80 °C)"),
        ({"limit_c": 60.0}, "resume_c", "must be below limit_c (60 °C)"),
        ({"step": 1.0}, "step", "less than 1"),
        ({"step": 0.0}, "step", "greater than 0"),
        ({"min_factor": 0.0}, "min_factor", "greater than 0"),
        ({"min_factor": 1.5}, "min_factor", "less than or equal to 1"),
        ({"check_every_s": 0.0}, "check_every_s", "greater than 0"),
        ({"limit_c": 800.0}, "limit_c", "less than or equal to 125"),
        ({"thermal_zone": " "}, "thermal_zone", "must not be empty"),
        ({"limit_c": "80"}, "limit_c", "valid number"),
        ({"limits_c": 80.0}, "limits_c", "Extra inputs"),
    ],
)
def test_config_refuses_naming_the_field(values: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        ThermalConfig.model_validate(values, strict=True)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,)]
    assert words in errors[0]["msg"]


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        ThermalConfig().limit_c = 90.0  # type: ignore[misc]


# --- pace -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy_s", "factor", "idle_s"),
    [(0.1, 1.0, 0.0), (0.1, 0.5, 0.1), (0.1, 0.25, 0.3), (0.2, 0.125, 1.4), (0.0, 0.5, 0.0)],
)
def test_pace_keeps_the_duty_cycle(busy_s: float, factor: float, idle_s: float) -> None:
    idle = pace(busy_s, factor)
    assert idle == pytest.approx(idle_s)
    if busy_s:
        assert busy_s / (busy_s + idle) == pytest.approx(factor)


@pytest.mark.parametrize(("busy_s", "factor"), [(0.1, 0.0), (0.1, 1.5), (-0.1, 0.5)])
def test_pace_refuses_nonsense(busy_s: float, factor: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        pace(busy_s, factor)
