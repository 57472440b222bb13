"""``edge-agent bench`` rows for several live sources on one model: total results per second
against the bare runtime loop, and each source's share against a fair one.

The cameras are simulated (none can exist here): each offers pre-made frames at a steady rate,
together 1.5 x what the model can take, so the model is always the bottleneck and the agent
must drop stale frames and share the model out. What is measured is the agent's part: the
hand-over, the round-robin inference thread, the stage chains and the post thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.config import AgentConfig, ModelConfig, SourceConfig
from edge_agent.health.source_state import SourceStates
from edge_agent.health.stats import SourceMetrics, StatsRegistry
from edge_agent.types import Frame, Result

#: The cameras together offer this many times what the bare model loop takes.
OVERSUPPLY = 1.5
#: Results before this are not counted (model warm-up, first frames through every thread).
WARMUP_S = 0.5


@dataclass
class SourcesRow:
    variant: str
    sources: int
    fps: float  # results per second, all sources together
    loop_fps: float  # the bare runtime loop on one pre-made tensor
    min_share: float  # the least-served source's results / (total / sources)


class SimulatedCamera:
    """Mimics a live FrameSource: ``fps`` frames a second until ``seconds`` have passed or it
    is closed, whatever the consumer does."""

    live = True
    kind = "camera"

    def __init__(
        self, source_id: str, image: np.ndarray, fps: float, seconds: float, metrics: SourceMetrics
    ) -> None:
        self.source_id, self.image, self.fps, self.seconds = source_id, image, fps, seconds
        self.metrics = metrics
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            due = start + seq / self.fps
            if due - start > self.seconds:
                return
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self.metrics.frames_read.inc()
            yield Frame(self.image, self.source_id, seq, time.time())
            seq += 1

    def close(self) -> None:
        self._stop.set()


class _Window:
    """A sink that notes when the warm-up is over and the last result came; the results
    themselves are read from the agent's stats registry at both ends."""

    name, needs_frame = "bench", False

    def __init__(self, stats: StatsRegistry, source_ids: list[str]) -> None:
        self.stats, self.source_ids = stats, source_ids
        self.start = time.monotonic()
        self.first: float | None = None
        self.last = 0.0
        self.at_first: list[int] = []

    def results(self) -> list[int]:
        return [self.stats.source(i).results.value for i in self.source_ids]

    def emit(self, result: Result, frame: Frame | None) -> None:
        now = time.monotonic()
        if now - self.start < WARMUP_S:
            return
        if self.first is None:
            self.first, self.at_first = now, self.results()
        self.last = now

    def close(self) -> None:
        pass


def sources_row(
    bundle: Bundle,
    runtime: str,
    threads: int,
    n_sources: int,
    loop_fps: float,
    image: np.ndarray,
    seconds: float,
) -> SourcesRow:
    """Run the agent on ``n_sources`` simulated cameras for ``seconds`` (without MQTT: the
    publisher's cost is in the single-source agent rows)."""
    from edge_agent.pipeline import Agent

    ids = [f"cam{i}" for i in range(n_sources)]
    cfg = AgentConfig(
        device_id="bench",
        model=ModelConfig(bundle=bundle.path, runtime=runtime, threads=threads),
        sources=[SourceConfig(id=i, uri=0, kind="camera") for i in ids],
    )
    per_camera_fps = OVERSUPPLY * loop_fps / n_sources

    def camera(
        source: SourceConfig, stop: threading.Event, m: SourceMetrics, _states: SourceStates
    ) -> SimulatedCamera:
        return SimulatedCamera(source.id, image, per_camera_fps, seconds + WARMUP_S, m)

    stats = StatsRegistry()
    window = _Window(stats, ids)
    agent = Agent(cfg, sinks=[window], publish=False, source_factory=camera, stats=stats)
    with agent:
        window.start = time.monotonic()
        agent.wait()
    at_end = window.results()  # a result after ``last`` cannot exist: the agent has closed
    counts = [end - first for end, first in zip(at_end, window.at_first, strict=False)]
    span = window.last - window.first if window.first is not None else 0.0
    total = sum(counts)
    fps = (total - 1) / span if span > 0 and total > 1 else 0.0  # total results, total-1 gaps
    fair = total / n_sources
    min_share = min(counts) / fair if fair else 0.0
    precision = bundle.manifest.model.precision
    return SourcesRow(f"{runtime} {precision} {threads}t", n_sources, fps, loop_fps, min_share)


def format_sources_table(rows: list[SourcesRow]) -> str:
    lines = [f"{'variant':<22} {'sources':>7} {'results/s':>10} {'x loop':>7} {'min share':>10}"]
    lines += [
        f"{r.variant:<22} {r.sources:>7} {r.fps:>10.1f} {r.fps / r.loop_fps:>7.2f} "
        f"{r.min_share:>10.2f}"
        for r in rows
    ]
    return "\n".join(lines)
