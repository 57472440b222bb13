"""The ``<prefix>/<device>/stats`` payload (schema edgesight.stats/1), built from the one stats
registry, the outbox's figures and the device's readings. No MQTT here: the publisher's timer
calls :meth:`StatsReporter.payload` and sends what it returns.

The topic is QoS 0, so any message may be lost: counts are totals since start (a consumer diffs
two of them, whatever went missing between), and only rates and latencies are per interval,
the time since the previous payload. docs/stats.md documents every key: change it with this
module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, Protocol

from edge_agent.health.stats import SourceMetrics, StatsRegistry, percentile_of
from edge_agent.health.system import SystemReadings, SystemSensors, throttle_flags
from edge_agent.publish.payloads import DROPPED_COUNTERS, TIMING_DIGITS, source_states_payload

log = logging.getLogger(__name__)

#: Schema tag of a stats payload; bump the number on an incompatible change.
STATS_SCHEMA = "edgesight.stats/1"
#: Decimal places: rates to 0.01 frame/s, latencies as in results (1 µs), durations and
#: temperatures to 0.1 (a sensor's own resolution is 0.5-1 °C), ts to 1 ms.
FPS_DIGITS = 2
MS_DIGITS = TIMING_DIGITS
SECONDS_DIGITS = 1
INTERVAL_DIGITS = 3
TEMP_DIGITS = 1
TS_DIGITS = 3
#: The model's latency histograms reported, in pipeline order (``ModelMetrics`` fields).
LATENCIES = ("preprocess_ms", "inference_ms", "decode_ms")
#: Every counter of a source, reported as a total under its registry name.
SOURCE_COUNTERS = tuple(f.name for f in fields(SourceMetrics))
#: The publisher's counters (``PublisherMetrics``), as totals.
MQTT_COUNTERS = ("published", "dropped", "connects", "disconnects")
#: A source's state keys, null until the source has said a state (the keys never change).
STATE_KEYS = ("state", "reason", "since", "last_frame_ts", "width", "height")
#: The MQTT link's figures, null when the payload is built without the publisher's.
LINK_KEYS = ("session_taken_over", "takeovers")


class OutboxStats(Protocol):
    """What the stats need of the durable outbox (publish/outbox.py's ``Outbox`` has it)."""

    @property
    def depth(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def oldest_age_s(self) -> float | None: ...
    def drops(self) -> dict[str, int]: ...


class StatsReporter:
    """Builds one stats payload per call; keeps the previous call's counts, so fps and
    latencies cover the interval between two payloads (the first: since construction).

    ``run`` is the agent's run id (new at each start); ``clock`` is monotonic (uptime and
    intervals), ``wall_clock`` gives ``ts``; ``started`` is the agent's start on ``clock``
    (default: now). ``system`` reads the device (default :class:`SystemSensors`). Not
    thread-safe: one timer calls it.
    """

    def __init__(
        self,
        registry: StatsRegistry,
        run: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        started: float | None = None,
        system: Callable[[], SystemReadings] | None = None,
    ) -> None:
        if not isinstance(run, str) or not run:
            raise ValueError(f"run must be a non-empty run id string, but got {run!r}")
        self._registry = registry
        self._run = run
        self._clock = clock
        self._wall_clock = wall_clock
        self._system = system if system is not None else SystemSensors().read
        now = clock()
        self._started = now if started is None else started
        self._last_t = now
        self._last_counts = self._source_counts(registry.snapshot())
        self._last_seen = {name: 0 for name in LATENCIES}  # histogram counts at the last call
        self._take_latencies(registry.snapshot())  # the interval starts now, as fps does
        self._warned: set[str] = set()

    def payload(
        self,
        outbox: OutboxStats | None,
        drop_totals: Callable[[], Mapping[str, int]] | None = None,
        link: Callable[[], Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The stats payload now; ``outbox`` is None when the agent runs without one;
        ``drop_totals`` gives what it dropped since the run started (the publisher's);
        ``link`` the MQTT link's own figures (``MqttPublisher.link_figures``)."""
        now = self._clock()
        interval = now - self._last_t
        snap = self._registry.snapshot()
        counts = self._source_counts(snap)
        states = source_states_payload(
            self._registry.source_states.snapshot(), snap.get("source", {})
        )
        sources = {
            sid: {
                **self._source(counts[sid], self._last_counts.get(sid, {}), interval),
                **_state(states.get(sid), counts[sid]),
            }
            for sid in counts
        }
        self._last_t, self._last_counts = now, counts
        payload: dict[str, Any] = {
            "schema": STATS_SCHEMA,
            "ts": round(self._wall_clock(), TS_DIGITS),
            "run": self._run,
            "uptime_s": round(max(0.0, now - self._started), SECONDS_DIGITS),
            "interval_s": round(interval, INTERVAL_DIGITS),
            "sources": sources,
            **self._take_latencies(snap),
            "totals": self._registry.totals(),
            "mqtt": _mqtt(snap, link),
            "outbox": self._outbox(outbox, drop_totals),
            "thermal_factor": _gauge(snap, "health", "thermal_factor"),
            "system": self._read_system(),
        }
        return payload

    # -- parts ---------------------------------------------------------------------------------

    @staticmethod
    def _source_counts(snap: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, int]]:
        return {
            sid: {name: int(metrics.get(name, 0)) for name in SOURCE_COUNTERS}
            for sid, metrics in snap.get("source", {}).items()
        }

    @staticmethod
    def _source(now: dict[str, int], before: dict[str, int], interval: float) -> dict[str, Any]:
        def rate(name: str) -> float | None:
            if interval <= 0:  # no time has passed (or the clock went back): no rate
                return None
            return round(max(0, now[name] - before.get(name, 0)) / interval, FPS_DIGITS)

        return {"fps": rate("results"), "read_fps": rate("frames_read"), **now}

    def _take_latencies(self, snap: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        """p50/p95 of the samples since the last call; ``n`` counts them all, the percentiles
        see at most the histogram's window (the newest)."""
        present = snap.get("model", {}).get("", {})
        out: dict[str, Any] = {}
        for name in LATENCIES:
            samples: list[float] = []
            n = 0
            if name in present:  # reading must not create the model's metrics
                seen, samples = self._registry.histogram("model", name).samples_since(
                    self._last_seen[name]
                )
                n, self._last_seen[name] = max(0, seen - self._last_seen[name]), seen
            p50, p95 = (percentile_of(samples, q) for q in (50, 95))
            out[name] = {"p50": _round(p50, MS_DIGITS), "p95": _round(p95, MS_DIGITS), "n": n}
        return out

    def _outbox(
        self, outbox: OutboxStats | None, drop_totals: Callable[[], Mapping[str, int]] | None
    ) -> dict[str, Any] | None:
        if outbox is None:
            return None
        try:
            age = outbox.oldest_age_s
            out: dict[str, Any] = {
                "depth": int(outbox.depth),
                "bytes": int(outbox.bytes),
                "oldest_age_s": None if age is None else round(float(age), SECONDS_DIGITS),
                "drops": {str(kind): int(n) for kind, n in sorted(outbox.drops().items())},
            }
            if drop_totals is not None:
                out["dropped_total"] = {str(k): int(n) for k, n in sorted(drop_totals().items())}
            recovered = getattr(outbox, "recovered_from", None)
            if recovered is not None:  # the file was damaged at start and moved here
                out["recovered_from"] = str(recovered)
            return out
        except Exception as exc:  # a disk fault must not stop the stats; say it instead
            self._warn_once("outbox", "stats: outbox figures unreadable: %r", exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _read_system(self) -> dict[str, Any]:
        try:
            r = self._system()
        except Exception as exc:  # a caller's reader; SystemSensors itself never raises
            self._warn_once("system", "stats: system readings failed: %r", exc)
            return {"error": f"{type(exc).__name__}: {exc}"}
        throttling = None
        if r.throttled_bits is not None:
            now, since_boot = throttle_flags(r.throttled_bits)
            throttling = {"bits": f"0x{r.throttled_bits:x}", "now": now, "since_boot": since_boot}
        return {
            "rss_bytes": r.rss_bytes,
            "peak_rss_bytes": r.peak_rss_bytes,
            "cpu_temp_c": _round(r.cpu_temp_c, TEMP_DIGITS),
            "thermal_zones": {k: _round(t, TEMP_DIGITS) for k, t in r.zones_c.items()},
            "throttling": throttling,
        }

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _gauge(snap: dict[str, dict[str, dict[str, Any]]], group: str, name: str) -> float | None:
    value = snap.get(group, {}).get("", {}).get(name)
    return None if value is None else round(float(value), INTERVAL_DIGITS)


def _mqtt(
    snap: dict[str, dict[str, dict[str, Any]]], link: Callable[[], Mapping[str, Any]] | None
) -> dict[str, Any] | None:
    """The publisher's figures, None when the agent runs without one (``publish=False``)."""
    metrics = snap.get("publisher", {}).get("")
    if metrics is None:
        return None
    return {
        "connected": bool(metrics.get("connected", 0)),
        **{name: int(metrics.get(name, 0)) for name in MQTT_COUNTERS},
        **(dict(link()) if link is not None else dict.fromkeys(LINK_KEYS)),
    }


def _state(said: dict[str, Any] | None, counts: dict[str, int]) -> dict[str, Any]:
    """The source's state entry, or nulls (and its losses) before it said one."""
    if said is not None:
        return said
    dropped = sum(counts.get(name, 0) for name in DROPPED_COUNTERS)
    return {**dict.fromkeys(STATE_KEYS), "frames_dropped": dropped}
