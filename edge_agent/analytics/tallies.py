"""A line's crossing totals and its per-hour and per-day tallies, kept across restarts.

Periods start at the device's **local** time boundaries (the hour on the wall clock, local
midnight), because "people in today" means the shop's day, not UTC's. The hour start is found
from the local minutes and seconds, so zones with half-hour offsets and the repeated hour when
daylight saving time ends are two distinct hours; the day start is local midnight by
``mktime``, so a daylight-saving day is 23 or 25 hours long.

Each line's tallies live in one small JSON file under the source's state folder, replaced with
``fsutil.write_atomic`` at most every ``SAVE_INTERVAL_S`` and at close: a power cut loses at most
that many seconds of counts, never the file. A file that cannot be read back (damaged, hand
edited, from a newer version) is moved aside and reported in the log; counting starts again
from zero rather than refusing to start.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from edge_agent.fsutil import move_aside, write_atomic

log = logging.getLogger(__name__)

Period = Literal["hour", "day"]
PERIODS: tuple[Period, ...] = ("hour", "day")
#: Seconds between writes of changed tallies: a crash loses at most this much counting, and an
#: SD card sees one small write per line every few seconds at most, not one per crossing.
SAVE_INTERVAL_S = 5.0
FILE_VERSION = 1
IN, OUT = 0, 1


def period_start(period: Period, ts: float) -> float:
    """Unix time at which the local hour or day holding ``ts`` began."""
    lt = time.localtime(ts)
    if period == "hour":
        return float(math.floor(ts) - lt.tm_min * 60 - lt.tm_sec)
    midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
    if midnight > ts:  # midnight skipped by a DST change: the day began at the first valid time
        midnight = math.floor(ts) - (lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec)
    return float(midnight)


def next_start(period: Period, start: float) -> float:
    """When the period after the one beginning at ``start`` begins (a day is 23 to 25 hours;
    an hour is 3600 s unless the UTC offset moves by a fraction of an hour inside it)."""
    if period == "hour":
        after = start + 3600
        return after if period_start("hour", after) == after else period_start("hour", after + 1800)
    return period_start("day", start + 26 * 3600)


def local_iso(ts: float) -> str:
    """``ts`` as local time with its UTC offset, e.g. ``2024-06-01T14:00:00+02:00``."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


@dataclass
class Tally:
    """In and out counts per label since ``start``."""

    start: float
    labels: dict[str, list[int]] = field(default_factory=dict)

    def add(self, label: str, direction: int) -> None:
        self.labels.setdefault(label, [0, 0])[direction] += 1

    def totals(self) -> tuple[int, int]:
        return (
            sum(c[IN] for c in self.labels.values()),
            sum(c[OUT] for c in self.labels.values()),
        )

    def payload(self) -> dict[str, Any]:
        total_in, total_out = self.totals()
        return {
            "start": self.start,
            "start_local": local_iso(self.start),
            "in": total_in,
            "out": total_out,
            "labels": {k: {"in": c[IN], "out": c[OUT]} for k, c in sorted(self.labels.items())},
        }


class LineTallies:
    """One line's totals since ``since`` and, per period, the current and the previous one."""

    def __init__(self, periods: tuple[Period, ...] = PERIODS) -> None:
        self.periods = periods
        self.since: float | None = None
        self.total = Tally(0.0)
        self.current: dict[Period, Tally] = {}
        self.previous: dict[Period, Tally] = {}
        #: When each current period ends: until then a frame costs one comparison per period,
        #: not a localtime() and mktime() call; until the first of them, one comparison.
        self._ends: dict[Period, float] = {}
        self._first_end = -math.inf

    def advance(self, ts: float) -> bool:
        """Move to the periods holding ``ts``; True if any period began (the state changed).
        The period before a new one is kept as ``previous`` (zeros if nothing ran then)."""
        if ts < self._first_end:
            return False  # inside every current period, as nearly every frame is
        changed = False
        if self.since is None:
            self.since = self.total.start = ts
            changed = True
        for period in self.periods:
            if ts < self._ends.get(period, -math.inf):
                continue  # same period (or the clock stepped back: keep counting in it)
            start = period_start(period, ts)
            now = self.current.get(period)
            if now is None or now.start < start:
                before = period_start(period, start - 1)
                kept = now if now is not None and now.start == before else Tally(before)
                self.previous[period] = kept
                self.current[period] = now = Tally(start)
                changed = True
            self._ends[period] = next_start(period, now.start)
        self._first_end = min(self._ends.values(), default=math.inf)
        return changed

    def add(self, label: str, direction: int) -> None:
        """Count one crossing (``IN`` or ``OUT``); ``advance`` must have been called for it."""
        self.total.add(label, direction)
        for period in self.periods:
            self.current[period].add(label, direction)

    def payload(self) -> dict[str, Any]:
        """The retained line message without its ``ts`` (see docs/zones-lines.md)."""
        total_in, total_out = self.total.totals()
        body: dict[str, Any] = {
            "in": total_in,
            "out": total_out,
            "labels": self.total.payload()["labels"],
            "since": self.since,
        }
        for period in self.periods:
            if period in self.current:
                body[period] = self.current[period].payload()
                body[period]["previous"] = self.previous[period].payload()
        return body

    def to_json(self) -> bytes:
        doc = _File(
            version=FILE_VERSION,
            since=self.since,
            labels={k: (c[IN], c[OUT]) for k, c in self.total.labels.items()},
            periods={
                p: _Period(current=_stored(self.current[p]), previous=_stored(self.previous[p]))
                for p in self.current
            },
        )
        return doc.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes, periods: tuple[Period, ...]) -> LineTallies:
        """Tallies read back; ValidationError if the bytes are not a file this version wrote."""
        doc = _File.model_validate_json(data)
        tallies = cls(periods)
        tallies.since = doc.since
        tallies.total = Tally(doc.since or 0.0, {k: list(v) for k, v in doc.labels.items()})
        for period, stored in doc.periods.items():
            if period in periods:  # a period no longer configured is dropped
                tallies.current[period] = _restored(stored.current)
                tallies.previous[period] = _restored(stored.previous)
        return tallies


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    start: float
    labels: dict[str, tuple[NonNegativeInt, NonNegativeInt]]


class _Period(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current: _Stored
    previous: _Stored


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    version: Literal[1]
    since: float | None
    labels: dict[str, tuple[NonNegativeInt, NonNegativeInt]]
    periods: dict[Period, _Period]


def _stored(tally: Tally) -> _Stored:
    return _Stored(start=tally.start, labels={k: (c[IN], c[OUT]) for k, c in tally.labels.items()})


def _restored(stored: _Stored) -> Tally:
    return Tally(stored.start, {k: list(v) for k, v in stored.labels.items()})


class TallyStore:
    """Loads and saves the tallies of named lines as ``<folder>/<name>.json``; with no folder
    (a chain built without an agent) nothing touches the disk."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._tallies: dict[str, LineTallies] = {}
        self._dirty: set[str] = set()
        self._last_save = time.monotonic()
        self._failing = False

    def load(self, name: str, periods: tuple[Period, ...]) -> LineTallies:
        """``name``'s tallies as last saved, or new ones (a damaged file is moved aside)."""
        tallies = LineTallies(periods)
        path = None if self.folder is None else self.folder / f"{name}.json"
        if path is not None and path.exists():
            try:
                tallies = LineTallies.from_json(path.read_bytes(), periods)
            except (OSError, ValidationError) as exc:
                _move_aside(path, exc)
        self._tallies[name] = tallies
        return tallies

    def changed(self, name: str) -> None:
        self._dirty.add(name)

    def save_due(self, now: float | None = None) -> None:
        """Save the changed tallies if ``SAVE_INTERVAL_S`` passed since the last save."""
        now = time.monotonic() if now is None else now
        if self._dirty and now - self._last_save >= SAVE_INTERVAL_S:
            self.flush()
            self._last_save = now

    def flush(self) -> None:
        """Save every changed tally now. A failing disk is logged (once per outage), never
        raised: the counts stay in memory and the next save tries again."""
        if self.folder is None:
            self._dirty.clear()
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name in sorted(self._dirty):
                write_atomic(self.folder / f"{name}.json", self._tallies[name].to_json())
                self._dirty.discard(name)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot save line tallies in %s (%s); kept in memory", self.folder, exc)
            self._failing = True
            return
        if self._failing:
            log.info("line tallies in %s are saved again", self.folder)
        self._failing = False


def _move_aside(path: Path, exc: Exception) -> None:
    try:
        aside = move_aside(path)
    except OSError as move_exc:
        log.error("line tallies %s cannot be read (%s) nor moved aside (%s)", path, exc, move_exc)
        return
    log.error(
        "line tallies %s cannot be read (%s); moved to %s, counting starts from zero",
        path,
        str(exc).splitlines()[0],
        aside.name,
    )
