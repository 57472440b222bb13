"""Wires sources -> model -> each source's stage chain -> sinks. Owns the threads; no domain logic.

Three kinds of thread overlap. Per source, a capture thread reads, decodes and pre-processes the
next frame; one inference thread runs the model on the frames of every source, taken
round-robin from the hand-over (pipeline/handover.py), and does nothing else, so the agent runs
near the speed of the bare model; one post thread decodes the outputs, runs the source's stage
chain (counting first) and hands the result to every sink (the MQTT publisher sends from paho's
own thread, so the broker never slows inference). The model sits in a ``ModelSlot`` read at each
frame, so it can be swapped between two frames without restarting a thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from edge_agent import __version__
from edge_agent.bundle import Bundle, BundleError, load_bundle
from edge_agent.config.errors import dotted_path
from edge_agent.config.labels import label_problems, source_problems
from edge_agent.health.state import HealthState
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.commands import ReloadHook, SnapshotDesk, agent_handlers
from edge_agent.pipeline.gating import Gates, Skipped
from edge_agent.pipeline.handover import END, POLL_S, Handover
from edge_agent.pipeline.items import Done, Staged
from edge_agent.pipeline.model_slot import ModelSlot, return_free_heap
from edge_agent.pipeline.pacing import Pacer
from edge_agent.pipeline.post import POST_QUEUE_FRAMES as POST_QUEUE_FRAMES
from edge_agent.pipeline.post import Poster
from edge_agent.pipeline.source_health import SourceHealth, StatusLink
from edge_agent.pipeline.stages import HookSink, Sink, Sinks, build_chain
from edge_agent.predictor import Predictor
from edge_agent.sources import Source, SourceError, open_source, resolve_kind
from edge_agent.types import Frame, FrameInfo, Result

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig, SourceConfig
    from edge_agent.health.source_state import SourceStates
    from edge_agent.health.stats import SourceMetrics
    from edge_agent.publish.publisher import MqttPublisher
    from edge_agent.updates.wiring import Updates

log = logging.getLogger(__name__)

#: How long close() waits for each thread to finish its current frame.
THREAD_JOIN_TIMEOUT_S = 10.0

ResultHook = Callable[[Result, Frame], None]
SourceFactory = Callable[["SourceConfig", threading.Event, "SourceMetrics", "SourceStates"], Source]


class Agent:
    """The running agent; a context manager. ``start()`` loads and connects; ``wait()`` blocks
    until every finite source is done or ``stop()`` is called; ``close()`` releases everything.

    ``sinks`` take every result besides the MQTT publisher (``on_result`` is a shorthand for a
    hook that gets the picture); ``publish=False`` runs without a broker; ``source_factory``
    opens the sources (tests and ``bench`` pass cameras that cannot exist here).
    """

    def __init__(
        self,
        cfg: AgentConfig,
        on_result: ResultHook | None = None,
        *,
        sinks: Sequence[Sink] = (),
        publish: bool = True,
        source_factory: SourceFactory = open_source,
        stats: StatsRegistry | None = None,
        on_reload: ReloadHook | None = None,
    ) -> None:
        self.cfg = cfg
        self.stats = stats or StatsRegistry()
        self.stop_event = threading.Event()
        self.bundle: Bundle | None = None
        self.publisher: MqttPublisher | None = None
        self.slot: ModelSlot | None = None
        self._extra_sinks = [*sinks, *([HookSink(on_result)] if on_result else [])]
        self._publish = publish
        self._source_factory = source_factory
        self._sources: list[Source] = []
        self._handover = Handover([s.id for s in cfg.sources])
        self._threads: list[threading.Thread] = []
        self._post_thread: threading.Thread | None = None
        self._model = self.stats.model()
        #: The retained status: health, source states (coalesced), thermal slowdown.
        self.status = StatusLink()
        self.health = HealthState(self.status.health_changed, cfg.health.degraded_clear_s)
        self._gates = Gates(cfg.sources)
        #: The post thread's queue, stage chains and sinks (pipeline/post.py).
        self._poster = Poster(
            self.stats, self._gates, self.health, self._frame_failed, lambda t: self._observe(t)
        )
        self._pacer = Pacer(cfg.health.thermal, self.stats, self.status.thermal)
        #: Frames asked for by the snapshot command, handed over by the capture threads.
        self.snapshots = SnapshotDesk()
        self._on_reload = on_reload
        #: Remote model updates (edge_agent/updates/); None when off or without a broker.
        self.updates: Updates | None = None

    def __enter__(self) -> Agent:
        try:
            self.start()
        except BaseException:
            self.close()  # what start() opened before it failed (sources, the publisher)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the bundle and model, open the sources, connect, start the threads.

        Raises BundleError (also for a model that does not fit its manifest, see
        ``Predictor.prove``), ModelRuntimeError or SourceError for what the user must fix;
        an unreachable broker is not an error (the publisher keeps retrying).
        """
        cfg = self.cfg
        bundle_path = cfg.model.bundle
        # Updates install signed bundles only: without pinned keys there is nothing to accept.
        if cfg.updates.enabled and cfg.model.public_keys and self._publish:
            from edge_agent.updates.wiring import Updates  # only where updates can arrive

            try:
                self.updates = Updates(cfg)
                bundle_path = self.updates.boot()  # the store's current model, after recovery
            except OSError as exc:  # a read-only state_dir: run, without remote updates
                log.warning("remote model updates are off: %s", exc)
                self.updates, bundle_path = None, cfg.model.bundle
        self.bundle = load_bundle(bundle_path, cfg.model.public_keys)
        if self.bundle.signed_by:
            log.info("bundle %s signed by key %s", self.bundle.source, self.bundle.signed_by)
        runtime = cfg.model.runtime_for(self.bundle.manifest.model.format)
        # A model that does not fit its manifest never starts (BundleError naming each field).
        predictor = Predictor.proven(
            self.bundle,
            runtime,
            cfg.model.threads,
            cfg.model.score_threshold,
            cfg.model.options_for(runtime),
        )
        self.slot = ModelSlot(predictor)
        self.slot.subscribe(self._announce)
        return_free_heap()  # what loading and optimising the model freed
        # OpenCV work (decoding, resizing) runs beside inference: its own worker threads would
        # take the cores the model runs on (320 px: 0.9 ms of CPU per frame for no gain).
        cv2.setNumThreads(1)
        labels = self.bundle.manifest.labels
        # check-config says the same, with the YAML line: a label the model lacks is the
        # bundle's mismatch, a stage that cannot work on its source the source's.
        for problems, error in ((label_problems(cfg, labels), BundleError),
                                (source_problems(cfg), SourceError)):  # fmt: skip
            if problems:
                raise error("; ".join(f"{dotted_path(loc)}: {msg}" for loc, msg in problems))
        for source_cfg in cfg.sources:  # one by one, so close() closes those already open
            specs = [(s.type, s.options()) for s in source_cfg.stages]
            folder = resolve_kind(source_cfg) == "folder"
            try:
                self._poster.chains[source_cfg.id] = build_chain(
                    source_cfg.id,
                    specs,
                    self.stats,
                    self.health.failed,
                    labels=labels,
                    state_dir=cfg.state_dir / "sources" / source_cfg.id,
                    media_folder=Path(str(source_cfg.uri)).expanduser() if folder else None,
                    device_id=cfg.device_id,
                )
            except ValueError as exc:
                raise SourceError(f"source {source_cfg.id!r}: stages: {exc}") from None
            metrics = self.stats.source(source_cfg.id)
            self._sources.append(
                self._source_factory(source_cfg, self.stop_event, metrics, self.stats.source_states)
            )
        sinks: list[Sink] = []
        if self._publish:
            from edge_agent.publish.wiring import build_publisher  # paho only when publishing

            self.publisher = build_publisher(
                cfg,
                agent_version=__version__,
                model=self.bundle.describe(),
                labels=list(self.bundle.manifest.labels),
                stats=self.stats,
                handlers=agent_handlers(self, self._on_reload) | self._update_handlers(),
                publish_skipped=self._gates.publish_skipped,
            )
            sinks.append(self.publisher)
        if self.updates is not None:
            sinks.append(self.updates.watch)  # the old model's baseline, the new one's probation
        # Built before the publisher connects, so close() closes it even if start() fails next.
        self._poster.sinks = Sinks([*sinks, *self._extra_sinks], self.stats, self.health.failed)
        if self.publisher is not None:
            self.publisher.start()
        if self.updates is not None:
            self.updates.start(self)
        self.status.publisher = self.publisher
        live = [s.id for s in cfg.sources if resolve_kind(s) in ("camera", "stream")]
        SourceHealth(self.stats.source_states, self.health, live, self.status)
        self.status.start()
        self._post_thread = self._thread(self._poster.run, "post", waited=False)
        self._thread(self._infer_loop, "infer")
        log.info(
            "running %s (%s, %s) on %d source(s)",
            self.bundle.model_id,
            self.bundle.manifest.model.file,
            runtime,
            len(self._sources),
        )
        for source in self._sources:
            self._thread(self._capture_loop, f"capture-{source.source_id}", source)

    def _update_handlers(self) -> dict[str, Any]:
        """The update commands: the updater's, or a refusal saying why updates are off."""
        if self.updates is not None:
            return self.updates.handlers()
        from edge_agent.updates.off import refusing_handlers

        model = self.cfg.model
        why = ("updates.enabled is false" if not self.cfg.updates.enabled else
               "model.public_keys is empty (only signed bundles are installed)"
               if not model.public_keys else "state_dir cannot be written")  # fmt: skip
        return refusing_handlers(why)

    def _thread(
        self, target: Callable[..., None], name: str, *args: object, waited: bool = True
    ) -> threading.Thread:
        """Start a thread; ``waited`` ones are what wait() waits for and close() joins first
        (not the post thread: it ends last, after close() drains its queue)."""
        thread = threading.Thread(target=target, args=args, name=name)
        thread.start()
        if waited:
            self._threads.append(thread)
        return thread

    def wait(self, poll_s: float = POLL_S) -> None:
        """Block until every source has ended or stop() was called."""
        while any(t.is_alive() for t in self._threads) and not self.stop_event.is_set():
            self.stop_event.wait(poll_s)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Stop sources, let the post thread finish what was inferred, close stages and sinks
        (the publisher sends its offline status), release the model. Safe to call twice."""
        self.stop_event.set()
        if self.updates is not None:  # an update under way stops; the next start recovers it
            self.updates.close()
        for thread in self._threads:
            thread.join(THREAD_JOIN_TIMEOUT_S)
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        for source in self._sources:
            source.close()
        self._sources = []
        post_stuck = False
        if self._post_thread is not None:
            try:  # after every frame already inferred
                self._poster.q.put(None, timeout=THREAD_JOIN_TIMEOUT_S)
            except queue.Full:
                log.error("the post thread is stuck; %d result(s) not published", POST_QUEUE_FRAMES)
            self._post_thread.join(THREAD_JOIN_TIMEOUT_S)
            post_stuck = self._post_thread.is_alive()
            self._post_thread = None
        if not post_stuck:  # the stages are the post thread's: never run them beside it
            # Live sources stopped: conclude what is open.
            for source_id in list(self._poster.chains):
                self._poster.finish_source(source_id)
            # Also after a start() that failed half-way: whatever was built is closed, once.
            for chain in self._poster.chains.values():
                chain.close()
        else:
            log.error("the post thread did not stop; the stages are left as they are")
        self._poster.chains = {}
        self.status.close()  # before the publisher's offline status
        self._poster.sinks.close()
        self._poster.sinks = Sinks([], self.stats)
        if self.slot is not None:
            if stuck:  # a runtime freed under a running inference can crash in native code
                log.error("threads %s did not stop; the model is left open", stuck)
            else:
                self.slot.close()
            self.slot = None

    # -- the threads ---------------------------------------------------------------------------

    def _needs_frame(self, source_id: str) -> bool:
        return self._poster.chains[source_id].needs_frame or self._poster.sinks.needs_frame

    def _capture_loop(self, source: Source) -> None:
        sid = source.source_id
        metrics = self.stats.source(sid)
        slot = self._require_slot()
        keep_picture = self._needs_frame(sid)
        try:
            for frame in source.frames():
                if self.snapshots.wanted(sid):
                    self.snapshots.fulfil(frame)
                decision = self._gates.decide(sid, frame)
                if decision is not None and not decision.infer:
                    metrics.frames_gated.inc()
                    skipped = Skipped(frame if keep_picture else frame.info(), decision.reason)
                    if source.live:  # never in place of a waiting frame the gate let through
                        self._handover.offer_if_empty(sid, skipped)
                    elif not self._handover.put(sid, skipped, self.stop_event):
                        return
                    del frame, skipped
                    continue
                predictor = slot.current  # the model this frame is prepared for and run on
                try:
                    prepared = predictor.prepare(frame.image)
                except Exception:
                    self._frame_failed(metrics, frame, "pre-processing")
                    continue
                # Only a stage or sink needs the picture after this: drop it now otherwise.
                staged = Staged(frame if keep_picture else frame.info(), prepared, predictor)
                if source.live:
                    if self._handover.offer(sid, staged) is not None:
                        metrics.dropped_stale.inc()
                elif not self._handover.put(sid, staged, self.stop_event):
                    return
                del frame, prepared, staged  # not kept alive while the next frame is read
        except Exception:
            log.exception("source %s stopped on an unexpected error", sid)
            self.health.failed()
        finally:
            self._handover.close(sid)

    def _infer_loop(self) -> None:
        """The only thread that runs the model: every source's frames, round-robin."""
        while not self.stop_event.is_set() and self._handover.open_sources:
            got = self._handover.take(POLL_S)
            if got is None:
                continue
            sid, staged = got
            if staged is END or isinstance(staged, Skipped):  # in order, past the model
                if not self._poster.put(sid if staged is END else staged, self.stop_event):
                    return
                continue
            started = time.monotonic()
            try:
                inferred = staged.predictor.infer(staged.prepared)
            except Exception:  # one bad frame or a runtime hiccup must not stop the agent
                self._frame_failed(self.stats.source(sid), staged.frame, "inference")
                continue
            done = Done(staged.frame, inferred, staged.predictor)
            del staged  # the input tensor is done with: free it before waiting
            if not self._poster.put(done, self.stop_event):
                return
            now = time.monotonic()
            rest = self._pacer.rest_after(now - started, now)
            if rest > 0 and self.stop_event.wait(rest):  # too hot: work only part of the time
                return

    # -- helpers -------------------------------------------------------------------------------

    def _observe(self, timing_ms: dict[str, float]) -> None:
        self._model.preprocess_ms.observe(timing_ms.get("preprocess", 0.0))
        self._model.inference_ms.observe(timing_ms.get("inference", 0.0))
        self._model.decode_ms.observe(timing_ms.get("decode", 0.0))

    def _frame_failed(self, metrics: SourceMetrics, frame: Frame | FrameInfo, where: str) -> None:
        """Count a failed frame (from any thread) and log the first per source."""
        if metrics.errors.inc() == 1:  # once per source: a broken model fails every frame
            log.exception("source %s: frame %d failed in %s", frame.source_id, frame.seq, where)
        self.health.failed()

    def _announce(self, predictor: Predictor) -> None:
        """A swapped-in model is named in the retained status."""
        self._model.swaps.inc()
        if self.publisher is not None:
            self.publisher.set_model(predictor.bundle.describe())

    def _require_slot(self) -> ModelSlot:
        if self.slot is None:
            raise RuntimeError("Agent.start() must run before frames are processed")
        return self.slot

    def frames_done(self) -> int:
        """Results produced over every source (what run's exit code looks at)."""
        return self.stats.total("source", "results")

    def frames_failed(self) -> int:
        return self.stats.total("source", "errors")
