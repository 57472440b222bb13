"""Classifier decoders: ``softmax`` (one label per image) and ``sigmoid`` (multilabel)."""

from __future__ import annotations

import numpy as np

from edge_agent.bundle.manifest import SigmoidDecoder, SoftmaxDecoder
from edge_agent.decoders.ops import (
    DecodeError,
    DecodeFn,
    Outputs,
    output,
    sigmoid,
    softmax,
    squeeze_batch,
)
from edge_agent.preprocess import Transform
from edge_agent.types import Classifications


def classifier_decoder(cfg: SoftmaxDecoder | SigmoidDecoder, n_labels: int) -> DecodeFn:
    multilabel = cfg.type == "sigmoid"

    def decode(outputs: Outputs, transform: Transform) -> Classifications:
        raw = squeeze_batch(output(outputs, cfg.output, "scores"), 1, "classifier")
        if raw.shape[0] != n_labels:
            raise DecodeError(
                f"classifier output has {raw.shape[0]} scores but the manifest "
                f"has {n_labels} labels"
            )
        scores = raw.astype(np.float32)
        if cfg.from_logits:
            scores = sigmoid(scores) if multilabel else softmax(scores)
        return Classifications(scores=scores.astype(np.float32), multilabel=multilabel)

    return decode
