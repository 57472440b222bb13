"""One image in, predictions and counts out: bundle + runtime + preprocess + decoder.

The pipeline, ``serve`` and the trainer's artifact evaluation all go through this, so an
exported model is measured by exactly the code that runs it on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.counting import frame_counts
from edge_agent.decoders import build_decoder
from edge_agent.preprocess import Preprocessor
from edge_agent.runtimes import Runtime, load_runtime
from edge_agent.types import Classifications, Detections


@dataclass
class Prediction:
    predictions: Detections | Classifications
    counts: dict[str, int]
    timing_ms: dict[str, float]


class Predictor:
    """Loads the runtime for a verified bundle; ``predict`` is safe to call from many threads."""

    def __init__(
        self,
        bundle: Bundle,
        runtime: str = "onnx",
        threads: int = 2,
        score_threshold: float | None = None,
        runtime_options: dict[str, object] | None = None,
    ) -> None:
        self.bundle = bundle
        manifest = bundle.manifest
        self.labels = manifest.labels
        self.runtime: Runtime = load_runtime(
            runtime, bundle, threads=threads, **(runtime_options or {})
        )
        self.preprocess = Preprocessor(manifest.input)
        self.decode = build_decoder(manifest, score_threshold, bundle.path)
        self.thresholds = np.asarray(manifest.class_thresholds(score_threshold), np.float32)

    def predict(self, image: np.ndarray) -> Prediction:
        """Run one BGR uint8 image through preprocess, model, decoder and counting."""
        t0 = time.perf_counter()
        tensor, transform = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.runtime.run(tensor)
        t2 = time.perf_counter()
        predictions = self.decode(outputs, transform)
        counts = frame_counts(predictions, self.labels, self.thresholds)
        t3 = time.perf_counter()
        return Prediction(
            predictions,
            counts,
            {
                "preprocess": round((t1 - t0) * 1000, 3),
                "inference": round((t2 - t1) * 1000, 3),
                "decode": round((t3 - t2) * 1000, 3),
            },
        )

    def close(self) -> None:
        self.runtime.close()
