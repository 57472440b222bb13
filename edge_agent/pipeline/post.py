"""The post thread's work: an inferred frame becomes a result at every sink, in frame order.

Split out of agent.py, which wires and owns the threads. One post thread decodes the outputs,
runs the source's stage chain (counting first) and hands the result to every sink, so none of
that slows the inference thread; the queue between them is bounded (inference waits when it is
full, so nothing is dropped). The poster owns the stage chains and the sinks: only the post
thread runs them, and close() only once that thread has ended.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_agent.pipeline.gating import Gates, Skipped
from edge_agent.pipeline.handover import POLL_S
from edge_agent.pipeline.items import Done
from edge_agent.pipeline.stages import Sinks, StageChain
from edge_agent.predictor import Prediction, Predictor
from edge_agent.types import Frame, FrameInfo, Result

if TYPE_CHECKING:
    from edge_agent.health.state import HealthState
    from edge_agent.health.stats import SourceMetrics, StatsRegistry

log = logging.getLogger("edge_agent.pipeline.agent")  # what these lines said before the split

#: Inferred frames waiting for the post thread (decode, stages, sinks); inference waits when it
#: is full, so nothing is dropped.
POST_QUEUE_FRAMES = 8

PostItem = Done | Skipped | str
FrameFailed = Callable[["SourceMetrics", Frame | FrameInfo, str], None]


class Poster:
    """The queue into the post thread, and what that thread does with each item.

    An item is a Done frame, a Skipped one (the motion gate kept it from the model), a source
    id (that source ended) or None (stop). ``frame_failed`` counts and logs a failed frame;
    ``observe`` takes each frame's timing figures.
    """

    def __init__(
        self,
        stats: StatsRegistry,
        gates: Gates,
        health: HealthState,
        frame_failed: FrameFailed,
        observe: Callable[[dict[str, float]], None],
    ) -> None:
        self.q: queue.Queue[PostItem | None] = queue.Queue(POST_QUEUE_FRAMES)
        self.chains: dict[str, StageChain] = {}
        self.sinks = Sinks([], stats)
        self._stats = stats
        self._gates = gates
        self._health = health
        self._frame_failed = frame_failed
        self._observe = observe

    def put(self, item: PostItem, stop_event: threading.Event) -> bool:
        """Queue item for the post thread, waiting while it is full; False once stopped."""
        while not stop_event.is_set():
            try:
                self.q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        """Decode, run the source's stages, hand to every sink: in frame order per source."""
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, str):
                n = self._stats.source(item).results.value
                log.info("source %s finished after %d frame(s)", item, n)
                self.finish_source(item)
                continue
            metrics = self._stats.source(item.frame.source_id)
            try:  # whatever fails, the post thread goes on: inference would wait for it forever
                if isinstance(item, Skipped):
                    self._post_skipped(item, metrics)
                else:
                    self._post(item, metrics)
            except Exception:
                self._frame_failed(metrics, item.frame, "decoding")

    def finish_source(self, source_id: str) -> None:
        """A source ended (or the agent stops): its stages conclude (an open camera-trap
        sequence ends) and the sinks publish that. Guarded like every stage and sink."""
        chain = self.chains.get(source_id)
        concluded = chain.finish() if chain is not None else None
        if concluded is not None:
            self.sinks.finish(concluded)

    def _post(self, item: Done, metrics: SourceMetrics) -> None:
        frame = item.frame
        prediction = item.predictor.finish(item.inferred)
        self._observe(prediction.timing_ms)
        result = make_result(frame, prediction, item.predictor)
        self._gates.remember(result)
        self._conclude(result, frame, metrics)

    def _post_skipped(self, item: Skipped, metrics: SourceMetrics) -> None:
        """A frame the motion gate kept from the model: the source's last predictions stand."""
        result = self._gates.standing(item.frame)
        if result is not None:
            self._conclude(result, item.frame, metrics)

    def _conclude(self, result: Result, frame: Frame | FrameInfo, metrics: SourceMetrics) -> None:
        """The source's stages, then every sink."""
        picture = frame if isinstance(frame, Frame) else None
        result = self.chains[frame.source_id].process(result, picture)  # stages are guarded
        self.sinks.emit(result, picture)  # sinks are guarded
        metrics.results.inc()
        self._health.succeeded()


def make_result(frame: Frame | FrameInfo, out: Prediction, predictor: Predictor) -> Result:
    """One frame's result: its predictions with what the model and frame say about them."""
    manifest = predictor.bundle.manifest
    return Result(
        source_id=frame.source_id,
        seq=frame.seq,
        ts=frame.ts,
        model=predictor.model_id,
        task=manifest.task,
        labels=manifest.labels,
        frame_size=(frame.width, frame.height),
        predictions=out.predictions,
        timing_ms=out.timing_ms,
        origin=frame.origin,
        class_thresholds=predictor.thresholds,
    )
