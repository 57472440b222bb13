"""Wires sources -> predictor -> counts -> MQTT. Owns the threads; no domain logic.

Three stages overlap. Per source, a capture thread reads, decodes and pre-processes the next
frame while an inference thread runs the model on the current one; one post thread decodes the
model's outputs, counts, and hands results to paho for every source. The inference thread does
nothing but inference, so the agent runs near the speed of the bare model. Capture hands over
through a one-slot mailbox: live sources keep only the newest frame (a camera that outruns the
model must not build a backlog of stale frames); files and folders wait until inference takes
each frame, so every frame is processed, in order, one decoded ahead. paho sends from its own
thread: the broker never slows inference.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2

from edge_agent import __version__
from edge_agent.bundle import Bundle, load_bundle
from edge_agent.config import AgentConfig
from edge_agent.pipeline.handover import POLL_S, Mailbox
from edge_agent.predictor import Inferred, Prediction, Predictor, Prepared
from edge_agent.publish.publisher import MqttPublisher
from edge_agent.sources import FrameSource, open_source
from edge_agent.types import Frame, FrameInfo, Result

log = logging.getLogger(__name__)

#: How long close() waits for each thread to finish its current frame.
THREAD_JOIN_TIMEOUT_S = 10.0
#: Inferred frames waiting for the post thread (decode, count, publish); inference waits
#: when it is full, so nothing is dropped.
POST_QUEUE_FRAMES = 8


@dataclass
class SourceStats:
    frames: int = 0
    errors: int = 0
    dropped_frames: int = 0  # live frames replaced by a newer one before inference took them


ResultHook = Callable[[Result, Frame], None]
Staged = tuple[Frame | FrameInfo, Prepared]  # a frame and its tensor, ready for the model


def return_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them by default): the
    model's loading and graph optimisation free ~2 MB that would otherwise stay resident."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: nothing to do


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
        self._workers: list[threading.Thread] = []
        self._post_q: queue.Queue[tuple[Frame | FrameInfo, Inferred] | str | None] = queue.Queue(
            POST_QUEUE_FRAMES
        )
        self._post_thread: threading.Thread | None = None
        self._degraded = False
        self._lock = threading.Lock()  # stats.errors and _degraded, set from three threads

    def start(self) -> None:
        """Load the bundle and model, open the sources, connect, start the threads.

        Raises BundleError, ModelRuntimeError or SourceError for what the user must fix;
        an unreachable broker is not an error (the publisher keeps retrying).
        """
        cfg = self.cfg
        self.bundle = load_bundle(cfg.model.bundle, cfg.model.public_keys)
        if self.bundle.signed_by:
            log.info("bundle %s signed by key %s", self.bundle.path, self.bundle.signed_by)
        runtime = cfg.model.runtime_for(self.bundle.manifest.model.format)
        self._predictor = Predictor(
            self.bundle,
            runtime,
            cfg.model.threads,
            cfg.model.score_threshold,
            cfg.model.options_for(runtime),
        )
        return_free_heap()  # what loading and optimising the model freed
        # OpenCV work (decoding, resizing) runs beside inference: its own worker threads would
        # take the cores the model runs on (320 px: 0.9 ms of CPU per frame for no gain).
        cv2.setNumThreads(1)
        for source_cfg in cfg.sources:  # one by one, so close() closes those already open
            self._sources.append(open_source(source_cfg, self.stop_event))
        self.publisher = MqttPublisher(
            cfg.mqtt,
            cfg.device_id,
            __version__,
            self.bundle.describe(),
            [s.id for s in cfg.sources],
        )
        self.publisher.start()
        self._post_thread = threading.Thread(target=self._post_loop, name="post")
        self._post_thread.start()
        log.info(
            "running %s (%s, %s) on %d source(s)",
            self.bundle.model_id,
            self.bundle.manifest.model.file,
            runtime,
            len(self._sources),
        )
        for source in self._sources:
            self._start_source(source)

    def _start_source(self, source: FrameSource) -> None:
        handover = Mailbox()
        capture = threading.Thread(
            target=self._capture_loop, args=(source, handover), name=f"capture-{source.source_id}"
        )
        infer = threading.Thread(
            target=self._infer_loop, args=(source, handover), name=f"infer-{source.source_id}"
        )
        capture.start()
        infer.start()
        self._workers += [capture, infer]

    def _capture_loop(self, source: FrameSource, handover: Mailbox) -> None:
        stats = self.stats[source.source_id]
        predictor = self._require_predictor()
        try:
            for frame in source.frames():
                try:
                    prepared = predictor.prepare(frame.image)
                except Exception:
                    self._frame_failed(stats, frame, "pre-processing")
                    continue
                # Only a hook needs the picture after this: drop it now, not after publishing.
                staged: Staged = (frame if self.on_result else frame.info(), prepared)
                if source.live:
                    stats.dropped_frames += handover.offer(staged)
                elif not handover.put(staged, self.stop_event):
                    return
                del frame, prepared, staged  # not kept alive while the next frame is read
        except Exception:
            log.exception("source %s stopped on an unexpected error", source.source_id)
            self._set_degraded()
        finally:
            handover.close()

    def _blocking_put(self, q: queue.Queue, item: Any) -> bool:
        while not self.stop_event.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _infer_loop(self, source: FrameSource, handover: Mailbox) -> None:
        stats = self.stats[source.source_id]
        predictor = self._require_predictor()
        while not self.stop_event.is_set():
            got, staged = handover.get(POLL_S)
            if not got:
                continue
            if staged is None:
                self._blocking_put(self._post_q, source.source_id)  # the source has ended
                return
            frame, prepared = staged
            del staged
            try:
                inferred = predictor.infer(prepared)
            except Exception:  # one bad frame or a runtime hiccup must not stop the agent
                self._frame_failed(stats, frame, "inference")
                continue
            finally:
                del prepared  # the input tensor is done with: free it before waiting
            if not self._blocking_put(self._post_q, (frame, inferred)):
                return

    def _post_loop(self) -> None:
        """Decode, count, publish and report, in frame order per source."""
        predictor = self._require_predictor()
        while True:
            item = self._post_q.get()
            if item is None:
                return
            if isinstance(item, str):
                log.info("source %s finished after %d frame(s)", item, self.stats[item].frames)
                continue
            frame, inferred = item
            stats = self.stats[frame.source_id]
            try:
                result = self._result(frame, predictor.finish(inferred))
            except Exception:
                self._frame_failed(stats, frame, "decoding")
                continue
            stats.frames += 1
            if self.publisher is not None:
                try:
                    self.publisher.publish_result(result)
                    self.publisher.publish_counts(result.source_id, result.counts, result.ts)
                except Exception:
                    log.exception("publishing result %s/%d failed", result.source_id, result.seq)
            if self.on_result is not None and isinstance(frame, Frame):
                try:
                    self.on_result(result, frame)
                except Exception:  # a failing hook must not end the post thread
                    self._frame_failed(stats, frame, "the on_result hook")

    def _frame_failed(self, stats: SourceStats, frame: Frame | FrameInfo, stage: str) -> None:
        """Count a failed frame (from any of the three threads) and log the first per source."""
        with self._lock:
            stats.errors += 1
            first = stats.errors == 1
        if first:  # once per source: a broken model fails every frame
            log.exception("source %s: frame %d failed in %s", frame.source_id, frame.seq, stage)
        self._set_degraded()

    def _require_predictor(self) -> Predictor:
        if self._predictor is None or self.bundle is None:
            raise RuntimeError("Agent.start() must run before frames are processed")
        return self._predictor

    def _result(self, frame: Frame | FrameInfo, out: Prediction) -> Result:
        assert self.bundle is not None  # _require_predictor checked it
        manifest = self.bundle.manifest
        return Result(
            source_id=frame.source_id,
            seq=frame.seq,
            ts=frame.ts,
            model=self.bundle.model_id,
            task=manifest.task,
            labels=manifest.labels,
            frame_size=(frame.width, frame.height),
            predictions=out.predictions,
            counts=out.counts,
            timing_ms=out.timing_ms,
            origin=frame.origin,
        )

    def _set_degraded(self) -> None:
        with self._lock:
            if self._degraded or self.publisher is None:
                return
            self._degraded = True
        self.publisher.set_status("degraded")

    def wait(self, poll_s: float = POLL_S) -> None:
        """Block until every source has ended or stop() was called."""
        while any(t.is_alive() for t in self._workers) and not self.stop_event.is_set():
            self.stop_event.wait(poll_s)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Stop sources, flush results to paho, publish offline status, release the model.
        Safe to call twice."""
        self.stop_event.set()
        for thread in self._workers:
            thread.join(THREAD_JOIN_TIMEOUT_S)
        for source in self._sources:
            source.close()
        if self._post_thread is not None:
            try:  # after every frame already inferred
                self._post_q.put(None, timeout=THREAD_JOIN_TIMEOUT_S)
            except queue.Full:
                log.error("the post thread is stuck; %d result(s) not published", POST_QUEUE_FRAMES)
            self._post_thread.join(THREAD_JOIN_TIMEOUT_S)
            self._post_thread = None
        if self.publisher is not None:
            self.publisher.close()
        if self._predictor is not None:
            self._predictor.close()
            self._predictor = None
