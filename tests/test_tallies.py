"""Line tallies: local hour and day boundaries (with daylight saving time and half-hour
offsets), the previous period kept or zeroed, and files that survive a restart, a damaged
copy or a failing disk."""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from edge_agent.analytics import tallies as tallies_module
from edge_agent.analytics.tallies import IN, OUT, LineTallies, TallyStore, local_iso, period_start

#: POSIX TZ rules, so the tests need no tz database: Berlin (DST last Sunday of March at 02:00,
#: last Sunday of October at 03:00) and India (+05:30, no DST).
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"
INDIA = "IST-5:30"


@pytest.fixture
def tz(monkeypatch) -> Iterator[object]:
    def use(rule: str) -> None:
        monkeypatch.setenv("TZ", rule)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


def local(text: str) -> float:
    """A local wall-clock time (``2024-03-31 12:00``) as unix time, in the current TZ."""
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_hours_and_days_start_at_local_boundaries(tz):
    tz(BERLIN)
    noon = local("2024-06-01 12:34:56") + 0.5
    assert local_iso(period_start("hour", noon)) == "2024-06-01T12:00:00+02:00"
    assert local_iso(period_start("day", noon)) == "2024-06-01T00:00:00+02:00"
    tz(INDIA)
    assert local_iso(period_start("hour", noon)) == "2024-06-01T16:00:00+05:30"
    assert period_start("hour", noon) % 3600 == 1800  # half past the hour in UTC


def test_daylight_saving_days_are_23_and_25_hours_and_the_repeated_hour_is_two(tz):
    tz(BERLIN)
    spring = period_start("day", local("2024-03-31 12:00:00"))
    assert period_start("day", spring + 23 * 3600) - spring == 23 * 3600  # next local midnight
    autumn = period_start("day", local("2024-10-27 12:00:00"))
    assert period_start("day", autumn + 25 * 3600) - autumn == 25 * 3600
    first_two = calendar.timegm((2024, 10, 27, 0, 0, 0))  # 00:00 UTC is 02:00 CEST
    hours = [period_start("hour", first_two + i * 3600 + 60) for i in range(3)]
    assert [local_iso(h) for h in hours] == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",  # the same wall-clock hour again, a period of its own
        "2024-10-27T03:00:00+01:00",
    ]


def test_periods_roll_and_keep_the_previous_one_only_if_it_was_just_before(tz):
    tz(BERLIN)
    t = LineTallies()
    nine = local("2024-06-01 09:10:00")
    assert t.advance(nine) is True and t.since == nine
    t.add("person", IN)
    t.add("person", OUT)
    t.add("car", IN)
    assert t.advance(nine + 600) is False
    assert t.advance(nine + 3600) is True  # 10:10: a new hour, the same day
    body = t.payload()
    assert (body["in"], body["out"]) == (2, 1)
    assert body["labels"] == {"car": {"in": 1, "out": 0}, "person": {"in": 1, "out": 1}}
    assert (body["hour"]["in"], body["hour"]["previous"]["in"]) == (0, 2)
    assert body["hour"]["previous"]["start_local"] == "2024-06-01T09:00:00+02:00"
    assert (body["day"]["in"], body["day"]["previous"]["in"]) == (2, 0)
    t.advance(nine + 3 * 3600)  # 12:10, nothing counted 10-11: the previous hour is zeros
    assert t.payload()["hour"]["previous"] == {
        "start": local("2024-06-01 11:00:00"),
        "start_local": "2024-06-01T11:00:00+02:00",
        "in": 0,
        "out": 0,
        "labels": {},
    }


def test_a_clock_stepping_back_keeps_counting_in_the_current_period(tz):
    tz(BERLIN)
    t = LineTallies(("hour",))
    t.advance(local("2024-06-01 09:10:00"))
    t.add("person", IN)
    assert t.advance(local("2024-06-01 08:59:00")) is False
    t.add("person", IN)
    assert t.payload()["hour"]["in"] == 2


def test_saved_and_loaded_again(tmp_path, tz):
    tz(BERLIN)
    store = TallyStore(tmp_path)
    t = store.load("door", ("hour", "day"))
    t.advance(local("2024-06-01 09:10:00"))
    t.add("person", IN)
    store.changed("door")
    store.flush()
    doc = json.loads((tmp_path / "door.json").read_text())
    assert doc["version"] == 1 and doc["labels"] == {"person": [1, 0]}
    back = TallyStore(tmp_path).load("door", ("hour",))  # day no longer wanted: dropped
    assert back.payload() == {
        "in": 1,
        "out": 0,
        "labels": {"person": {"in": 1, "out": 0}},
        "since": local("2024-06-01 09:10:00"),
        "hour": t.payload()["hour"],
    }


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 2, "since": null, "labels": {}, "periods": {}}',
        b'{"version": 1, "since": null, "labels": {"person": [-1, 0]}, "periods": {}}',
        b"\xff\xfe",
    ],
)
def test_a_damaged_file_is_moved_aside_logged_and_counting_starts_again(tmp_path, caplog, content):
    (tmp_path / "door.json").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="edge_agent.analytics.tallies"):
        t = TallyStore(tmp_path).load("door", ("hour",))
    assert t.payload()["in"] == 0 and t.since is None
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith("door.json.damaged-")
    assert (tmp_path / names[0]).read_bytes() == content  # kept for a person to look at
    assert "door.json cannot be read" in caplog.text and "counting starts from zero" in caplog.text


def test_saves_wait_for_the_interval(tmp_path):
    store = TallyStore(tmp_path)
    store.load("door", ("hour",)).advance(1_700_000_000.0)
    store.changed("door")
    start = store._last_save
    store.save_due(start + tallies_module.SAVE_INTERVAL_S - 0.1)
    assert not (tmp_path / "door.json").exists()
    store.save_due(start + tallies_module.SAVE_INTERVAL_S)
    assert (tmp_path / "door.json").exists()


def test_a_failing_disk_is_logged_once_and_never_raises(tmp_path, caplog):
    blocked = tmp_path / "state"
    blocked.write_text("a file where the folder should be")
    store = TallyStore(blocked / "lines")
    store.load("door", ("hour",)).advance(1_700_000_000.0)
    with caplog.at_level(logging.INFO, logger="edge_agent.analytics.tallies"):
        for _ in range(3):
            store.changed("door")
            store.flush()
        assert caplog.text.count("cannot save line tallies") == 1
        blocked.unlink()
        store.flush()
    assert "saved again" in caplog.text
    assert (blocked / "lines" / "door.json").exists()


def test_without_a_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = TallyStore(None)
    store.load("door", ("hour",)).advance(1_700_000_000.0)
    store.changed("door")
    store.flush()
    assert list(tmp_path.iterdir()) == []


def test_local_iso_carries_the_offset(tz):
    tz(INDIA)
    assert local_iso(0.0) == datetime.fromtimestamp(0.0).astimezone().isoformat(timespec="seconds")
    assert local_iso(0.0).endswith("+05:30")


def test_after_a_restart_the_periods_move_on_to_the_current_time(tmp_path, tz):
    tz(BERLIN)
    store = TallyStore(tmp_path)
    t = store.load("door", ("hour", "day"))
    t.advance(local("2024-06-01 09:10:00"))
    t.add("person", IN)
    store.changed("door")
    store.flush()
    back = TallyStore(tmp_path).load("door", ("hour", "day"))
    assert back.advance(local("2024-06-01 09:50:00")) is False  # the same hour: nothing new
    assert back.payload()["hour"]["in"] == 1
    assert back.advance(local("2024-06-02 10:30:00")) is True  # the next day, after an outage
    body = back.payload()
    assert (body["in"], body["hour"]["in"], body["day"]["in"]) == (1, 0, 0)
    assert body["day"]["previous"]["in"] == 1  # yesterday, kept: it was the day just before
    assert body["hour"]["previous"]["in"] == 0  # 09:00-10:00 today: nothing ran then
    assert body["hour"]["previous"]["start_local"] == "2024-06-02T09:00:00+02:00"
