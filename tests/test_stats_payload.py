"""The stats payload: a real registry counted into, a fake sysfs and vcgencmd (as
test_thermal.py does), a test clock; and the process's real memory readings."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.health.stats import HISTOGRAM_WINDOW, Histogram, StatsRegistry, percentile_of
from edge_agent.health.system import (
    SystemReadings,
    SystemSensors,
    read_peak_rss_bytes,
    read_rss_bytes,
    read_zones,
    throttle_flags,
)
from edge_agent.publish.payloads import encode
from edge_agent.publish.stats_payload import LATENCIES, STATS_SCHEMA, StatsReporter

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def make_zone(root: Path, n: int, kind: str, temp_c: float | str) -> Path:
    """A sysfs thermal zone: ``type`` and ``temp`` in millidegrees (or the text given)."""
    zone = root / f"thermal_zone{n}"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text(kind + "\n")
    text = temp_c if isinstance(temp_c, str) else str(round(temp_c * 1000))
    (zone / "temp").write_text(text + "\n")
    return zone / "temp"


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeOutbox:
    """The figures publish/outbox.py's Outbox exposes (OutboxStats), set by the test."""

    def __init__(self, depth: int, size: int, age: float | None, drops: dict[str, int]) -> None:
        self.depth, self.bytes, self.oldest_age_s, self._drops = depth, size, age, drops

    def drops(self) -> dict[str, int]:
        return dict(self._drops)


class BrokenOutbox:
    """An outbox whose database fails when read."""

    depth, bytes = 1, 2

    @property
    def oldest_age_s(self) -> float | None:
        raise sqlite3.OperationalError("disk I/O error")

    def drops(self) -> dict[str, int]:
        return {}


def still() -> SystemReadings:
    return SystemReadings(rss_bytes=1000, peak_rss_bytes=2000, cpu_temp_c=None)


def reporter(
    registry: StatsRegistry, clock: Clock, system: Any = still, **kw: Any
) -> StatsReporter:
    return StatsReporter(
        registry, "run-1", clock=clock, wall_clock=lambda: 1795305600.12345, system=system, **kw
    )


# --- rates and latencies over the interval -----------------------------------------------------


def test_fps_per_source_is_the_results_delta_over_the_interval() -> None:
    reg, clock = StatsRegistry(), Clock()
    cam, door = reg.source("cam1"), reg.source("door")
    cam.results.inc(500)  # before the reporter: not in the first interval
    rep = reporter(reg, clock)
    cam.results.inc(150)
    cam.frames_read.inc(300)
    door.results.inc(5)
    clock.t += 10.0
    first = rep.payload(None)
    assert first["interval_s"] == 10.0
    assert first["sources"]["cam1"]["fps"] == 15.0
    assert first["sources"]["cam1"]["read_fps"] == 30.0
    assert first["sources"]["door"]["fps"] == 0.5
    assert first["sources"]["cam1"]["results"] == 650  # counts are totals since start
    cam.results.inc(40)
    clock.t += 3.0
    second = rep.payload(None)
    assert second["interval_s"] == 3.0
    assert second["sources"]["cam1"]["fps"] == 13.33
    assert second["sources"]["door"]["fps"] == 0.0
    assert second["sources"]["cam1"]["results"] == 690


def test_a_source_that_appears_later_counts_from_zero() -> None:
    reg, clock = StatsRegistry(), Clock()
    rep = reporter(reg, clock)
    reg.source("late").results.inc(20)
    clock.t += 4.0
    assert rep.payload(None)["sources"]["late"]["fps"] == 5.0


@pytest.mark.parametrize("step", [0.0, -5.0])
def test_no_rate_when_no_time_passed_or_the_clock_went_back(step: float) -> None:
    reg, clock = StatsRegistry(), Clock()
    rep = reporter(reg, clock)
    reg.source("cam1").results.inc(3)
    clock.t += step
    payload = rep.payload(None)
    assert payload["sources"]["cam1"]["fps"] is None
    assert payload["sources"]["cam1"]["read_fps"] is None
    encode(payload)


def test_latency_percentiles_cover_only_the_interval() -> None:
    reg, clock = StatsRegistry(), Clock()
    model = reg.model()
    for ms in (900.0, 900.0):  # before the reporter (a warm-up): never reported
        model.inference_ms.observe(ms)
    rep = reporter(reg, clock)
    for ms in range(1, 101):
        model.inference_ms.observe(float(ms))
    model.preprocess_ms.observe(0.12345)
    clock.t += 1
    first = rep.payload(None)
    assert first["inference_ms"] == {"p50": 51.0, "p95": 96.0, "n": 100}  # nearest rank
    assert first["preprocess_ms"] == {"p50": 0.123, "p95": 0.123, "n": 1}
    assert first["decode_ms"] == {"p50": None, "p95": None, "n": 0}
    for ms in (7.0, 8.0):
        model.inference_ms.observe(ms)
    clock.t += 1
    assert rep.payload(None)["inference_ms"] == {"p50": 8.0, "p95": 8.0, "n": 2}
    clock.t += 1
    assert rep.payload(None)["inference_ms"] == {"p50": None, "p95": None, "n": 0}


def test_more_samples_than_the_window_counts_all_and_ranks_the_newest() -> None:
    reg, clock = StatsRegistry(), Clock()
    hist = reg.model().inference_ms
    rep = reporter(reg, clock)
    total = HISTOGRAM_WINDOW + 1000
    for i in range(total):
        hist.observe(1000.0 if i < 1000 else 1.0)  # the oldest 1000 fall out of the window
    clock.t += 1
    assert rep.payload(None)["inference_ms"] == {"p50": 1.0, "p95": 1.0, "n": total}


def test_samples_since_and_percentile_of() -> None:
    hist = Histogram(window=4)
    assert hist.samples_since(0) == (0, [])
    for ms in (1.0, 2.0, 3.0):
        hist.observe(ms)
    assert hist.samples_since(1) == (3, [2.0, 3.0])
    for ms in (4.0, 5.0, 6.0):
        hist.observe(ms)
    assert hist.samples_since(0) == (6, [3.0, 4.0, 5.0, 6.0])  # the window's worth
    assert hist.samples_since(6) == (6, [])
    assert hist.samples_since(99) == (6, [])  # a count from the future: nothing, no error
    assert percentile_of([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile_of([], 95) is None


def test_reading_does_not_create_metrics() -> None:
    reg, clock = StatsRegistry(), Clock()
    rep = reporter(reg, clock)
    clock.t += 1
    payload = rep.payload(None)
    assert reg.snapshot() == {}
    assert payload["sources"] == {} and payload["mqtt"] is None
    assert payload["thermal_factor"] is None
    assert all(payload[name]["n"] == 0 for name in LATENCIES)


# --- totals, publisher, outbox -----------------------------------------------------------------


def test_totals_publisher_and_header() -> None:
    reg, clock = StatsRegistry(), Clock(50.0)
    reg.source("cam1").dropped_stale.inc(7)
    reg.source("cam2").errors.inc(2)
    reg.stage("cam1", "zones").errors.inc()
    pub = reg.publisher()
    pub.published.inc(42)
    pub.dropped.inc(3)
    pub.connects.inc()
    pub.connected.set(1)
    reg.gauge("health", "thermal_factor").set(0.25)
    rep = reporter(reg, clock, started=20.0)
    clock.t = 80.04
    payload = rep.payload(None)
    assert payload["schema"] == STATS_SCHEMA == "edgesight.stats/1"
    assert (payload["ts"], payload["run"]) == (1795305600.123, "run-1")
    assert (payload["uptime_s"], payload["interval_s"]) == (60.0, 30.04)
    assert payload["totals"] == reg.totals()
    assert payload["totals"]["dropped_frames"] == 7
    assert payload["totals"]["frame_errors"] == 2 and payload["totals"]["stage_errors"] == 1
    assert payload["sources"]["cam1"]["dropped_stale"] == 7
    assert payload["mqtt"] == {
        "connected": True, "published": 42, "dropped": 3, "connects": 1, "disconnects": 0,
        "session_taken_over": None, "takeovers": None,  # no publisher's link figures given
    }  # fmt: skip
    assert payload["thermal_factor"] == 0.25
    assert payload["outbox"] is None


def test_outbox_figures() -> None:
    reg, clock = StatsRegistry(), Clock()
    rep = reporter(reg, clock)
    outbox = FakeOutbox(12, 34567, 93.456, {"result": 5, "count": 1})
    assert rep.payload(outbox)["outbox"] == {
        "depth": 12, "bytes": 34567, "oldest_age_s": 93.5, "drops": {"count": 1, "result": 5},
    }  # fmt: skip
    empty = FakeOutbox(0, 0, None, {})
    assert rep.payload(empty)["outbox"] == {
        "depth": 0, "bytes": 0, "oldest_age_s": None, "drops": {},
    }  # fmt: skip


def test_an_outbox_fault_is_reported_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    reg, clock = StatsRegistry(), Clock()
    rep = reporter(reg, clock)
    caplog.set_level(logging.WARNING, logger="edge_agent.publish.stats_payload")
    broken = BrokenOutbox()
    payloads = [rep.payload(broken) for _ in range(3)]
    assert all(p["outbox"] == {"error": "OperationalError: disk I/O error"} for p in payloads)
    assert len(caplog.records) == 1 and "outbox" in caplog.records[0].getMessage()
    assert payloads[-1]["sources"] == {}  # the rest of the payload is still there


@pytest.mark.parametrize("run", ["", None, 7])
def test_a_bad_run_id_is_refused_by_name(run: Any) -> None:
    with pytest.raises(ValueError, match="run must be a non-empty run id string"):
        StatsReporter(StatsRegistry(), run)


# --- the device: fake sysfs and vcgencmd -------------------------------------------------------


def sensors(root: Path, answer: str | None = None, **kw: Any) -> SystemSensors:
    return SystemSensors(sys_root=root, vcgencmd=lambda: answer, **kw)


def system_of(root: Path, answer: str | None = None, **kw: Any) -> dict[str, Any]:
    rep = reporter(StatsRegistry(), Clock(), system=sensors(root, answer, **kw).read)
    system: dict[str, Any] = rep.payload(None)["system"]
    return system


def test_raspberry_pi_temperature_and_throttling(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "cpu-thermal", 61.234)
    system = system_of(tmp_path, "throttled=0x50005\n")
    assert system["cpu_temp_c"] == 61.2
    assert system["thermal_zones"] == {"cpu-thermal": 61.2}
    assert system["throttling"] == {
        "bits": "0x50005",
        "now": ["under_voltage", "throttled"],
        "since_boot": ["under_voltage", "throttled"],
    }


def test_a_pi_that_was_throttled_once_but_is_fine_now(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "cpu-thermal", 50.0)
    throttling = system_of(tmp_path, "throttled=0xa0000")["throttling"]
    since_boot = ["arm_frequency_capped", "soft_temperature_limit"]
    assert throttling == {"bits": "0xa0000", "now": [], "since_boot": since_boot}


def test_jetson_zones_by_type_with_a_broken_one(tmp_path: Path) -> None:
    kinds = {0: ("CPU-therm", 48.5), 1: ("GPU-therm", 46.0), 2: ("SOC0-therm", 47.25)}
    for n, (kind, temp) in kinds.items():
        make_zone(tmp_path, n, kind, temp)
    make_zone(tmp_path, 10, "PMIC-Die", "-256000")  # an implausible reading, as some report
    system = system_of(tmp_path)  # no vcgencmd off a Pi
    assert system["cpu_temp_c"] == 48.5  # the governor's choice: the CPU zone by its type
    assert system["thermal_zones"] == {
        "CPU-therm": 48.5, "GPU-therm": 46.0, "SOC0-therm": 47.2, "PMIC-Die": None,
    }  # fmt: skip
    assert system["throttling"] is None
    encode({"system": system})


def test_zones_sharing_a_type_are_told_apart(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "acpitz", 30.0)
    make_zone(tmp_path, 2, "x86_pkg_temp", 55.0)
    make_zone(tmp_path, 11, "acpitz", 31.0)
    assert read_zones(tmp_path) == {"acpitz#0": 30.0, "x86_pkg_temp": 55.0, "acpitz#11": 31.0}
    assert len(read_zones(tmp_path, limit=2)) == 2


def test_configured_zone_wins_and_no_sensor_reads_null(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "cpu-thermal", 70.0)
    other = make_zone(tmp_path / "elsewhere", 0, "board", 40.0)
    assert system_of(tmp_path, cpu_zone=other)["cpu_temp_c"] == 40.0
    empty = system_of(tmp_path / "none")
    assert (empty["cpu_temp_c"], empty["thermal_zones"], empty["throttling"]) == (None, {}, None)


@pytest.mark.parametrize("answer", ["garbage", "throttled=zz"])
def test_bad_vcgencmd_answer_reads_unknown_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.health.system")
    sensor = sensors(tmp_path, answer)
    assert [sensor.read().throttled_bits for _ in range(3)] == [None, None, None]
    assert len(caplog.records) == 1 and "throttling unknown" in caplog.records[0].getMessage()


def test_a_failing_reader_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> SystemReadings:
        raise OSError("sensor gone")

    rep = reporter(StatsRegistry(), Clock(), system=fails)
    assert rep.payload(None)["system"] == {"error": "OSError: sensor gone"}


@given(st.integers(min_value=0, max_value=(1 << 20) - 1))
def test_throttle_flags_name_exactly_the_bits_set(bits: int) -> None:
    now, since = throttle_flags(bits)
    names = ["under_voltage", "arm_frequency_capped", "throttled", "soft_temperature_limit"]
    assert sum(1 << names.index(n) for n in now) == bits & 0xF
    assert sum(1 << names.index(n) for n in since) == (bits >> 16) & 0xF


def test_negative_throttle_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="throttled bits must be >= 0"):
        throttle_flags(-1)


# --- memory: the real process ------------------------------------------------------------------


def test_rss_is_current_not_peak() -> None:
    before = read_rss_bytes()
    assert before is not None and before > 0
    block = b"\x01" * (64 * MIB)  # touched pages (a zeroed calloc would not be resident)
    grown = read_rss_bytes()
    assert grown is not None and grown >= before + 60 * MIB
    del block  # a block this large is its own mmap, given back to the kernel at once
    shrunk = read_rss_bytes()
    peak = read_peak_rss_bytes()
    assert shrunk is not None and shrunk <= grown - 60 * MIB
    assert peak is not None and peak >= grown - MIB  # the peak remembers the block


def test_rss_from_a_statm_file(tmp_path: Path) -> None:
    statm = tmp_path / "statm"
    statm.write_text("5000 250 100 10 0 300 0\n")
    assert read_rss_bytes(statm, page_size=4096) == 250 * 4096
    statm.write_text("nonsense")
    assert read_rss_bytes(statm) is None
    assert read_rss_bytes(tmp_path / "missing") is None
    readings = SystemSensors(sys_root=tmp_path, vcgencmd=lambda: None, statm=statm).read()
    assert readings.rss_bytes is None and readings.peak_rss_bytes is not None


def test_peak_is_never_below_now() -> None:
    readings = SystemSensors(vcgencmd=lambda: None).read()
    assert readings.rss_bytes is not None and readings.peak_rss_bytes is not None
    assert readings.peak_rss_bytes >= readings.rss_bytes


# --- the whole payload -------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.floats(0.001, 3600.0, allow_subnormal=False),
            st.floats(0.0, 1e4, allow_subnormal=False),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_run_gives_exact_rates_and_valid_json(steps: list[tuple[int, float, float]]) -> None:
    reg, clock = StatsRegistry(), Clock(0.0)
    rep = reporter(reg, clock)
    src = reg.source("cam1")
    for results, seconds, ms in steps:
        src.results.inc(results)
        reg.model().inference_ms.observe(ms)
        clock.t += seconds
        payload = rep.payload(FakeOutbox(results, results * 100, seconds, {"result": results}))
        assert payload["sources"]["cam1"]["fps"] == round(results / seconds, 2)
        assert payload["inference_ms"]["n"] == 1
        assert json.loads(encode(payload)) == payload


def _shape(value: Any) -> Any:
    """Keys all the way down, for dicts whose keys are fixed names (not ids or zone types)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return None


def test_docs_example_has_exactly_the_payloads_keys(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "stats.md").read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))  # type: ignore[union-attr]
    make_zone(tmp_path, 0, "cpu-thermal", 61.0)
    reg, clock = StatsRegistry(), Clock()
    reg.source("cam1")
    reg.model()
    reg.publisher()
    reg.gauge("health", "thermal_factor").set(1.0)
    rep = reporter(reg, clock, system=sensors(tmp_path, "throttled=0x0").read)
    clock.t += 60
    payload = rep.payload(FakeOutbox(0, 0, None, {"result": 1}), lambda: {"result": 1})
    for part in (example, payload):  # ids and zone types are the device's own
        part["sources"] = {"<source>": next(iter(part["sources"].values()))}
        part["system"]["thermal_zones"] = {}
        part["outbox"]["drops"] = {}
        part["outbox"]["dropped_total"] = {}
    assert _shape(example) == _shape(payload)
    for key in _flatten(payload):
        assert f"`{key}`" in text, f"docs/stats.md does not document `{key}`"


def _flatten(value: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for k, v in value.items():
        if not k.startswith("<"):
            keys.add(k)
        if isinstance(v, dict):
            keys |= _flatten(v)
    return keys
