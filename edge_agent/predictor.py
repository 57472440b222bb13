"""One image in, predictions out: bundle + runtime + preprocess + decoder (no counting: that is
a stage of each source's chain).

The pipeline, ``serve`` and the trainer's artifact evaluation all go through this, so an
exported model is measured by exactly the code that runs it on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Self

import numpy as np
from pydantic import BaseModel

from edge_agent.bundle import Bundle, BundleError
from edge_agent.decoders import DecodeError, build_decoder
from edge_agent.decoders.anchors import AnchorError
from edge_agent.decoders.check import Problem, check_outputs
from edge_agent.preprocess import Preprocessor, Transform
from edge_agent.runtimes import Runtime, load_runtime
from edge_agent.runtimes.input_check import check_input
from edge_agent.types import Classifications, Detections


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


@dataclass
class Prepared:
    tensor: np.ndarray
    transform: Transform
    timing_ms: dict[str, float]


@dataclass
class Inferred:
    outputs: dict[str, np.ndarray]
    transform: Transform
    timing_ms: dict[str, float]


@dataclass
class Prediction:
    predictions: Detections | Classifications
    timing_ms: dict[str, float]


class Predictor:
    """Loads the runtime for a verified bundle; ``predict`` is safe to call from many threads."""

    def __init__(
        self,
        bundle: Bundle,
        runtime: str | None = None,
        threads: int = 2,
        score_threshold: float | None = None,
        runtime_options: BaseModel | None = None,
    ) -> None:
        self.bundle = bundle
        manifest = bundle.manifest
        self.labels = manifest.labels
        # No runtime named: the one that runs the bundle's model file format.
        self.runtime: Runtime = load_runtime(
            runtime or manifest.model.format, bundle, threads=threads, options=runtime_options
        )
        self.preprocess = Preprocessor(manifest.input)
        try:
            self.decode = build_decoder(manifest, score_threshold, bundle.path)
        except (DecodeError, AnchorError) as exc:  # the bundle's decoder settings or files
            self.runtime.close()
            raise BundleError(f"bundle {bundle.source}: {exc}") from exc
        self.thresholds = np.asarray(manifest.class_thresholds(score_threshold), np.float32)
        self.model_id = bundle.model_id

    @classmethod
    def proven(
        cls,
        bundle: Bundle,
        runtime: str | None = None,
        threads: int = 2,
        score_threshold: float | None = None,
        runtime_options: BaseModel | None = None,
    ) -> Self:
        """A predictor that ``prove`` found fitting its manifest (run and serve start with
        one); else it is closed and BundleError lists every problem."""
        predictor = cls(bundle, runtime, threads, score_threshold, runtime_options)
        try:
            problems = predictor.prove()
        except BaseException:
            predictor.close()
            raise
        if problems:
            predictor.close()
            raise BundleError(describe_problems(bundle, problems))
        return predictor

    def prepare(self, image: np.ndarray) -> Prepared:
        """Stage 1: frame -> input tensor (the pipeline runs it on the capture thread)."""
        t0 = time.perf_counter()
        tensor, transform = self.preprocess(image)
        tensor = self.runtime.to_input(tensor)
        return Prepared(tensor, transform, {"preprocess": _ms_since(t0)})

    def infer(self, prepared: Prepared) -> Inferred:
        """Stage 2: the model alone (the only work on the inference thread)."""
        t0 = time.perf_counter()
        outputs = self.runtime.run(prepared.tensor)
        timing = {**prepared.timing_ms, "inference": _ms_since(t0)}
        return Inferred(outputs, prepared.transform, timing)

    def finish(self, inferred: Inferred) -> Prediction:
        """Stage 3: decode (the pipeline runs it on the post thread)."""
        t0 = time.perf_counter()
        predictions = self.decode(inferred.outputs, inferred.transform)
        return Prediction(predictions, {**inferred.timing_ms, "decode": _ms_since(t0)})

    def set_thresholds(self, thresholds: np.ndarray) -> None:
        """New score thresholds, one per label, from the next decode on (a command): the
        decode function is rebuilt with them and swapped in whole."""
        thresholds = np.asarray(thresholds, np.float32)
        if thresholds.shape != (len(self.labels),):
            raise ValueError(
                f"thresholds must be one per label ({len(self.labels)}), got {thresholds.shape}"
            )
        self.decode = build_decoder(self.bundle.manifest, None, self.bundle.path, thresholds)
        self.thresholds = thresholds

    def predict(self, image: np.ndarray) -> Prediction:
        """All three stages for one BGR uint8 image, in this thread."""
        return self.finish(self.infer(self.prepare(image)))

    def prove(self) -> list[Problem]:
        """Every way the model does not fit its manifest, found on one blank frame.

        The frame goes through the real pre-processing and runtime (not ``infer``, which the
        pipeline's tests wrap), and the outputs are checked against what the decoder reads, so
        a wrong output name, anchor count or label count is refused at start-up, all at once,
        instead of failing on every frame. Costs one inference."""
        spec = self.bundle.manifest.input
        # Only ONNX files state their input's range and colours (image metadata).
        problems = check_input(spec, getattr(self.runtime, "metadata", {}))
        tensor, transform = self.preprocess(np.zeros((spec.height, spec.width, 3), np.uint8))
        try:
            outputs = self.runtime.run(self.runtime.to_input(tensor))
        except Exception as exc:  # each runtime raises its own types
            found = f"{type(exc).__name__}: {exc}"
            shape = f"{tensor.shape} {tensor.dtype}"
            return [*problems, Problem("input", f"the model to run on the {shape} input", found)]
        problems += check_outputs(self.bundle.manifest, outputs, self.bundle.path)
        if not problems:  # what the checks do not know yet must not pass silently either
            try:
                self.decode(outputs, transform)
            except DecodeError as exc:
                problems.append(Problem("decoder", "outputs its decoder can read", str(exc)))
        return problems

    def close(self) -> None:
        self.runtime.close()


def prove_bundle(
    bundle: Bundle,
    runtime: str | None = None,
    threads: int = 2,
    runtime_options: BaseModel | None = None,
) -> list[Problem]:
    """Load ``bundle`` in the runtime and ``Predictor.prove`` it (check-config, check-bundle).

    Raises ModelRuntimeError when the runtime cannot load the model, BundleError when the
    decoder cannot be built from the manifest (a bad anchors file, say)."""
    predictor = Predictor(bundle, runtime, threads, runtime_options=runtime_options)
    try:
        return predictor.prove()
    finally:
        predictor.close()


def describe_problems(bundle: Bundle, problems: list[Problem]) -> str:
    """The error for a model that does not fit its manifest: the bundle, then each problem."""
    lines = [f"  {p}" for p in problems]
    head = f"bundle {bundle.source}: the model does not fit its manifest"
    return "\n".join([f"{head} ({len(problems)} problem(s)):", *lines])
