"""The inference thread's thermal pacing (pipeline/pacing.py) driven by a fake thermal zone:
it rests in proportion as the governor steps down, says so once per change (status, stats,
log), and is back at full speed when cool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.thermal import ThermalConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.health.thermal import ThermalGovernor
from edge_agent.pipeline.pacing import Pacer


def zone(root: Path, temp_c: float) -> Path:
    folder = root / "thermal_zone0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "type").write_text("cpu-thermal\n")
    temp = folder / "temp"
    temp.write_text(f"{round(temp_c * 1000)}\n")
    return temp


def test_the_thread_rests_more_as_it_heats_and_says_so(tmp_path: Path, caplog) -> None:
    temp = zone(tmp_path, 60.0)
    cfg = ThermalConfig(check_every_s=10.0)
    stats = StatsRegistry()
    said: list[dict[str, Any] | None] = []
    pacer = Pacer(cfg, stats, said.append, ThermalGovernor(cfg, tmp_path, vcgencmd=lambda: None))
    assert pacer.rest_after(0.02, now=0.0) == 0.0  # cool: full speed
    temp.write_text("84000\n")
    assert pacer.rest_after(0.02, now=5.0) == 0.0  # not checked again before check_every_s
    assert pacer.rest_after(0.02, now=10.0) == pytest.approx(0.02)  # factor 0.5
    assert pacer.rest_after(0.02, now=20.0) == pytest.approx(0.06)  # factor 0.25
    assert [s and s["factor"] for s in said] == [0.5, 0.25]
    assert said[-1] is not None and said[-1]["temp_c"] == 84.0
    assert "84" in said[-1]["reason"] and said[-1]["throttled"] is False
    assert stats.gauge("health", "thermal_factor").value == 0.25
    assert stats.gauge("health", "cpu_temp_c").value == 84.0
    assert any("25 % of full speed" in r.getMessage() for r in caplog.records)
    temp.write_text("65000\n")  # cool again: one step up per check, then full speed
    assert pacer.rest_after(0.02, now=30.0) == pytest.approx(0.02)
    assert pacer.rest_after(0.02, now=40.0) == 0.0
    assert said[-1] is None  # the status drops its thermal object
    assert stats.gauge("health", "thermal_factor").value == 1.0


def test_disabled_or_without_a_sensor_it_never_rests(tmp_path: Path) -> None:
    said: list[Any] = []
    off = ThermalConfig(enabled=False)
    hot = zone(tmp_path / "hot", 95.0).parent.parent
    pacer = Pacer(off, StatsRegistry(), said.append, ThermalGovernor(off, hot))
    assert pacer.rest_after(1.0, now=100.0) == 0.0
    none = ThermalConfig()
    pacer = Pacer(none, StatsRegistry(), said.append,
                  ThermalGovernor(none, tmp_path / "empty", vcgencmd=lambda: None))  # fmt: skip
    assert pacer.rest_after(1.0, now=100.0) == 0.0 and said == []
