"""The motion gate in the pipeline: which frames the model may skip, and what stands for them.

Each source with ``motion.enabled`` has a ``MotionGate`` (edge_agent/motion.py) asked on its
capture thread, before the frame is prepared: a frame the gate lets through is inferred as
usual; a skipped one travels the same hand-over as a ``Skipped`` item (so a source's frames
stay in order) and, on the post thread, becomes a result whose predictions are the source's
previous ones (``inferred`` False): a still scene keeps its counts, tracks, zone occupants and
shelf slots. A live source's skipped frame never replaces a waiting frame the gate let through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edge_agent.motion import Decision, MotionGate
from edge_agent.types import Frame, FrameInfo, Result

if TYPE_CHECKING:
    from edge_agent.config import SourceConfig


@dataclass(frozen=True)
class Skipped:
    """A frame the motion gate kept from the model, on its way to the post thread."""

    frame: Frame | FrameInfo
    reason: str


class Gates:
    """Every source's gate (asked by its capture thread) and the result that stands for its
    skipped frames (kept by the post thread)."""

    def __init__(self, sources: Sequence[SourceConfig]) -> None:
        self._gates = {s.id: MotionGate(s.motion) for s in sources if s.motion.enabled}
        self._last: dict[str, Result] = {}
        #: Sources whose skipped frames still get a result message (``motion.publish_skipped``).
        self.publish_skipped = frozenset(
            s.id for s in sources if s.motion.enabled and s.motion.publish_skipped
        )

    def decide(self, source_id: str, frame: Frame) -> Decision | None:
        """The gate's decision for this frame, or None for a source without a gate (inferred).
        Called only from that source's capture thread."""
        gate = self._gates.get(source_id)
        return gate.decide(frame.image, frame.ts) if gate is not None else None

    def remember(self, result: Result) -> None:
        """An inferred frame's result, before its stages: what later skipped frames repeat."""
        if result.source_id in self._gates:
            self._last[result.source_id] = result

    def standing(self, frame: Frame | FrameInfo) -> Result | None:
        """The result of a skipped frame: the source's last inferred predictions at this
        frame's time, or None when nothing was inferred at this frame size yet."""
        last = self._last.get(frame.source_id)
        if last is None or last.frame_size != (frame.width, frame.height):
            return None
        return replace(
            last,
            seq=frame.seq,
            ts=frame.ts,
            origin=frame.origin,
            counts={},
            timing_ms={},
            inferred=False,
            publications=[],
            overlays=[],
            snapshot_requests=[],
        )
