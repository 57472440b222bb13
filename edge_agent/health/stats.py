"""One registry of counters, gauges and latency histograms for every part of the agent.

Sources, stages, sinks, the model and the publisher each count into the same registry, so the
demo's summary, ``bench``, the status payload and the stats topic read the same figures instead
of four classes of their own. Metrics are addressed by (group, key, name): ``("source", "cam1",
"frames_read")``; typed views (``SourceMetrics`` ...) give each part named fields.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from edge_agent.health.source_state import SourceStates

#: Latency samples kept per histogram for percentiles: the last minute at 30 fps.
HISTOGRAM_WINDOW = 2048


class Counter:
    """A monotonically increasing count, safe to increment from any thread."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def inc(self, n: int = 1) -> int:
        """Add ``n``; the new value (so exactly one caller sees the first failure)."""
        with self._lock:
            self._value += n
            return self._value

    @property
    def value(self) -> int:
        return self._value

    def snapshot(self) -> int:
        return self._value


class Gauge:
    """A value that goes up and down (queue depth, connected 0/1)."""

    def __init__(self) -> None:
        self._value: float = 0

    def set(self, value: float) -> None:
        self._value = value

    @property
    def value(self) -> float:
        return self._value

    def snapshot(self) -> float:
        return self._value


class Histogram:
    """Durations in ms: count and sum since start, percentiles over the recent window."""

    def __init__(self, window: int = HISTOGRAM_WINDOW) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self._count = 0
        self._total_ms = 0.0
        self._lock = threading.Lock()

    def observe(self, ms: float) -> None:
        with self._lock:
            self._recent.append(ms)
            self._count += 1
            self._total_ms += ms

    @property
    def count(self) -> int:
        return self._count

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of the recent window, None before the first sample."""
        with self._lock:
            ordered = sorted(self._recent)
        return _pick(ordered, q)

    def samples_since(self, count: int) -> tuple[int, list[float]]:
        """(the count now, the samples observed after ``count`` was reached, oldest first, at
        most the window): a reader that keeps the count gets each interval's latencies once,
        rather than the whole window's."""
        with self._lock:
            n = max(0, min(self._count - count, len(self._recent)))
            return self._count, list(self._recent)[len(self._recent) - n :]

    def snapshot(self) -> dict[str, float | int | None]:
        with self._lock:
            ordered = sorted(self._recent)  # once for both percentiles
        p50, p95 = (_pick(ordered, q) for q in (50, 95))
        mean = self._total_ms / self._count if self._count else None
        return {"count": self._count, "mean": mean, "p50": p50, "p95": p95}


def percentile_of(samples: list[float], q: float) -> float | None:
    """The q-th percentile (0-100, nearest rank) of unsorted samples, None when there are none."""
    return _pick(sorted(samples), q)


def _pick(ordered: list[float], q: float) -> float | None:
    """The q-th percentile of sorted samples (nearest rank), None when there are none."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else None


Metric = Counter | Gauge | Histogram


class StatsRegistry:
    """Get-or-create metrics by (group, key, name); ``snapshot()`` nests them as
    ``{group: {key: {name: value}}}`` (key ``""`` for one-of-a-kind parts)."""

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, str, str], Metric] = {}
        self._views: dict[tuple[type[Any], str, str], Any] = {}
        self._lock = threading.Lock()
        #: What each source is doing now (streaming, reconnecting, ...), beside its counters.
        self.source_states = SourceStates()

    def _get(self, kind: type[Metric], group: str, key: str, name: str) -> Any:
        address = (group, key, name)
        with self._lock:
            metric = self._metrics.get(address)
            if metric is None:
                metric = self._metrics[address] = kind()
        if not isinstance(metric, kind):
            raise TypeError(f"metric {address} is a {type(metric).__name__}, not a {kind.__name__}")
        return metric

    def counter(self, group: str, name: str, key: str = "") -> Counter:
        counter: Counter = self._get(Counter, group, key, name)
        return counter

    def gauge(self, group: str, name: str, key: str = "") -> Gauge:
        gauge: Gauge = self._get(Gauge, group, key, name)
        return gauge

    def histogram(self, group: str, name: str, key: str = "") -> Histogram:
        histogram: Histogram = self._get(Histogram, group, key, name)
        return histogram

    def total(self, group: str, name: str) -> int:
        """A counter summed over every key of its group (errors of all sources)."""
        with self._lock:
            found = [m for (g, _k, n), m in self._metrics.items() if g == group and n == name]
        return sum(m.value for m in found if isinstance(m, Counter))

    def totals(self) -> dict[str, int]:
        """Since start, over every source, stage and sink: what the status payload carries so a
        dashboard sees why a device is degraded without the stats topic."""
        return {
            "results": self.total("source", "results"),
            "frame_errors": self.total("source", "errors"),
            "stage_errors": self.total("stage", "errors"),
            "sink_errors": self.total("sink", "errors"),
            "dropped_frames": self.total("source", "dropped_stale"),
            "gated_frames": self.total("source", "frames_gated"),
        }

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            items = list(self._metrics.items())
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (group, key, name), metric in sorted(items, key=lambda item: item[0]):
            out.setdefault(group, {}).setdefault(key, {})[name] = metric.snapshot()
        return out

    # -- typed views ---------------------------------------------------------------------------

    def source(self, source_id: str) -> SourceMetrics:
        view: SourceMetrics = self._view(SourceMetrics, "source", source_id)
        return view

    def model(self) -> ModelMetrics:
        view: ModelMetrics = self._view(ModelMetrics, "model", "")
        return view

    def publisher(self) -> PublisherMetrics:
        view: PublisherMetrics = self._view(PublisherMetrics, "publisher", "")
        return view

    def stage(self, source_id: str, stage: str) -> StageMetrics:
        view: StageMetrics = self._view(StageMetrics, "stage", f"{source_id}/{stage}")
        return view

    def sink(self, name: str) -> StageMetrics:
        view: StageMetrics = self._view(StageMetrics, "sink", name)
        return view

    def _view(self, cls: type[Any], group: str, key: str) -> Any:
        """A dataclass whose fields are this registry's metrics of that group and key, by field
        name and annotated kind; made once per (kind, group, key), since the post thread asks
        for a source's view on every frame."""
        address = (cls, group, key)
        view = self._views.get(address)
        if view is None:
            kinds = {"Counter": self.counter, "Gauge": self.gauge, "Histogram": self.histogram}
            made = cls(**{f.name: kinds[str(f.type)](group, f.name, key) for f in fields(cls)})
            with self._lock:
                view = self._views.setdefault(address, made)
        return view


@dataclass(frozen=True)
class SourceMetrics:
    """One source, from capture to result."""

    frames_read: Counter  # frames delivered by the source
    frames_corrupt: Counter  # undecodable frames skipped
    reopens: Counter  # reopen attempts of a live source
    dropped_fps_limit: Counter  # live frames read and discarded to keep fps_limit
    dropped_stale: Counter  # live frames replaced by a newer one before inference took them
    #: live frames the backend had buffered (after an open, or while capture paused), read
    #: and discarded so results describe the current picture
    frames_drained: Counter
    results: Counter  # frames that became a result
    frames_gated: Counter  # frames the motion gate kept from the model (previous predictions)
    errors: Counter  # frames that failed (pre-processing, inference, decoding)


@dataclass(frozen=True)
class ModelMetrics:
    """The model, whichever source the frame came from."""

    preprocess_ms: Histogram
    inference_ms: Histogram
    decode_ms: Histogram
    swaps: Counter  # models swapped in while running


@dataclass(frozen=True)
class StageMetrics:
    """One stage of one source's chain, or one sink."""

    errors: Counter
    ms: Histogram


@dataclass(frozen=True)
class PublisherMetrics:
    """The MQTT publisher: ``published`` counts messages paho accepted (sent or queued in
    memory), ``dropped`` those it refused or that came after close()."""

    published: Counter
    dropped: Counter
    connects: Counter
    disconnects: Counter
    #: New paho clients started because the network thread had died (``check_alive``).
    restarts: Counter
    #: Messages the broker acknowledged with a failure reason (MQTT 5: not authorised, ...).
    refused: Counter
    connected: Gauge
