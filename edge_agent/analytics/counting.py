"""Counts per label for one frame, as the ``counts`` stage (zones, lines and events build on
this later)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.types import Classifications, Detections, Frame, Result


def frame_counts(
    predictions: Detections | Classifications,
    labels: list[str],
    class_thresholds: np.ndarray,
) -> dict[str, int]:
    """How many of each label this frame holds; every label is present, zeros included,
    so a dashboard sees a count go back to 0 when the object leaves.

    Detections count boxes per class. A multiclass classifier counts its top label when it
    passes that label's threshold; a multilabel one counts every label above its threshold.
    """
    if isinstance(predictions, Detections):
        per_class = np.bincount(predictions.class_id, minlength=len(labels))
    else:
        per_class = predictions.decided(class_thresholds).astype(np.int64)
    return dict(zip(labels, per_class.tolist(), strict=True))


class CountsOptions(BaseModel):
    """How many of each label every frame holds (every label, zeros included): the result's
    ``counts`` and the retained count topics."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameCounts:
    """The first stage of every default chain: how many of each label this frame holds."""

    name = "counts"
    needs_frame = False

    def process(self, result: Result, frame: Frame | None) -> Result:
        thresholds = result.class_thresholds  # the model's, already float32: no per-frame copy
        if thresholds is None:  # a result made without a model: every score counts
            thresholds = np.zeros(len(result.labels), np.float32)
        result.counts = frame_counts(result.predictions, result.labels, thresholds)
        return result

    def close(self) -> None:
        pass


@register_stage("counts", CountsOptions)
def build_counts(options: CountsOptions, context: StageContext) -> FrameCounts:
    return FrameCounts()
