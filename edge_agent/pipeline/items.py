"""What travels between the agent's threads: a frame ready for the model (capture -> inference,
through the hand-over) and a frame through it (inference -> post)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.predictor import Inferred, Predictor, Prepared
from edge_agent.types import Frame, FrameInfo


@dataclass
class Staged:
    """A frame ready for the model: what is kept of the frame, its tensor, the model for it."""

    frame: Frame | FrameInfo
    prepared: Prepared
    predictor: Predictor


@dataclass
class Done:
    """A frame through the model, on its way to the post thread."""

    frame: Frame | FrameInfo
    inferred: Inferred
    predictor: Predictor
