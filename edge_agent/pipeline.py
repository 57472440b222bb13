"""Wires sources -> preprocess -> runtime -> decoder -> counts -> MQTT. Owns the threads.

One thread per source runs its frames through the shared runtime (ONNX Runtime sessions are
safe to call concurrently). Publishing hands messages to paho's own network thread, so a slow
or absent broker never blocks inference.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_agent import __version__
from edge_agent.bundle import Bundle, load_bundle
from edge_agent.config import AgentConfig, SourceConfig
from edge_agent.predictor import Predictor
from edge_agent.publish.mqtt import MqttPublisher
from edge_agent.sources import FrameSource, open_source
from edge_agent.types import Frame, Result

log = logging.getLogger(__name__)

#: How long close() waits for each source thread to finish its current frame.
THREAD_JOIN_TIMEOUT_S = 10.0


@dataclass
class SourceStats:
    frames: int = 0
    errors: int = 0
    last_counts: dict[str, int] = field(default_factory=dict)


ResultHook = Callable[[Result, Frame], None]


class Agent:
    """The running agent. ``start()`` loads and connects; ``wait()`` blocks until every
    finite source is done or ``stop()`` is called; ``close()`` releases everything."""

    def __init__(self, cfg: AgentConfig, on_result: ResultHook | None = None) -> None:
        self.cfg = cfg
        self.on_result = on_result
        self.stop_event = threading.Event()
        self.stats: dict[str, SourceStats] = {s.id: SourceStats() for s in cfg.sources}
        self.bundle: Bundle | None = None
        self.publisher: MqttPublisher | None = None
        self._predictor: Predictor | None = None
        self._sources: list[FrameSource] = []
        self._threads: list[threading.Thread] = []
        self._degraded = False

    def start(self) -> None:
        """Load the bundle and model, open the sources, connect, start one thread per source.

        Raises BundleError, ModelRuntimeError or SourceError for what the user must fix;
        an unreachable broker is not an error (the publisher keeps retrying).
        """
        cfg = self.cfg
        self.bundle = load_bundle(cfg.model.bundle)
        manifest = self.bundle.manifest
        self._predictor = Predictor(
            self.bundle,
            cfg.model.runtime,
            cfg.model.threads,
            cfg.model.score_threshold,
            cfg.model.runtime_options(),
        )
        self._sources = [open_source(s, self.stop_event) for s in cfg.sources]
        self.publisher = MqttPublisher(
            cfg.mqtt,
            cfg.device_id,
            __version__,
            self.bundle.describe(),
            [s.id for s in cfg.sources],
        )
        self.publisher.start()
        log.info(
            "running %s (%s, %s) on %d source(s)",
            self.bundle.model_id,
            manifest.model.file,
            cfg.model.runtime,
            len(self._sources),
        )
        for src_cfg, source in zip(cfg.sources, self._sources, strict=True):
            thread = threading.Thread(
                target=self._run_source, args=(src_cfg, source), name=f"source-{src_cfg.id}"
            )
            thread.start()
            self._threads.append(thread)

    def _run_source(self, src_cfg: SourceConfig, source: FrameSource) -> None:
        stats = self.stats[src_cfg.id]
        try:
            for frame in source.frames():
                if self.stop_event.is_set():
                    break
                try:
                    result = self.process(frame)
                except Exception:  # one bad frame or a runtime hiccup must not stop the agent
                    stats.errors += 1
                    if stats.errors == 1:
                        log.exception("source %s: frame %d failed", src_cfg.id, frame.seq)
                    self._set_degraded()
                    continue
                stats.frames += 1
                stats.last_counts = result.counts
                self._publish(result)
                if self.on_result is not None:
                    self.on_result(result, frame)
        except Exception:
            log.exception("source %s stopped on an unexpected error", src_cfg.id)
            self._set_degraded()
        finally:
            log.info("source %s finished after %d frame(s)", src_cfg.id, stats.frames)

    def process(self, frame: Frame) -> Result:
        """Run one frame through the predictor and wrap it as a Result."""
        if self._predictor is None or self.bundle is None:
            raise RuntimeError("Agent.start() must run before process()")
        out = self._predictor.predict(frame.image)
        return Result(
            source_id=frame.source_id,
            seq=frame.seq,
            ts=frame.ts,
            model=self.bundle.model_id,
            task=self.bundle.manifest.task,
            labels=self.bundle.manifest.labels,
            frame_size=(frame.width, frame.height),
            predictions=out.predictions,
            counts=out.counts,
            timing_ms=out.timing_ms,
            origin=frame.origin,
        )

    def _publish(self, result: Result) -> None:
        if self.publisher is None:
            return
        self.publisher.publish_result(result)
        self.publisher.publish_counts(result.source_id, result.counts, result.ts)

    def _set_degraded(self) -> None:
        if not self._degraded and self.publisher is not None:
            self._degraded = True
            self.publisher.set_status("degraded")

    def wait(self, poll_s: float = 0.2) -> None:
        """Block until every source thread has ended or stop() was called."""
        while any(t.is_alive() for t in self._threads) and not self.stop_event.is_set():
            self.stop_event.wait(poll_s)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Stop sources, publish offline status, release the model. Safe to call twice."""
        self.stop_event.set()
        for thread in self._threads:
            thread.join(THREAD_JOIN_TIMEOUT_S)
        for source in self._sources:
            source.close()
        if self.publisher is not None:
            self.publisher.close()
        if self._predictor is not None:
            self._predictor.close()
            self._predictor = None
