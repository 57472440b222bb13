"""ONNX Runtime (CPU; CUDA/TensorRT where installed), inputs and outputs addressed by the
manifest's names. Its options model sits beside the class (STYLE 4); onnxruntime itself is
imported only when a session is made, so the config can be validated without it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.runtimes.errors import ModelRuntimeError

if TYPE_CHECKING:
    from edge_agent.bundle import Bundle

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}

#: Fastest first; the first one onnxruntime reports is used unless the config names others.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
#: Config names of onnxruntime's GraphOptimizationLevel members.
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OnnxOptions(BaseModel):
    """``model.onnx`` in the agent config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[str] | None = Field(
        None,
        description="Execution providers in order (e.g. [CUDAExecutionProvider]); default: "
        "TensorRT, then CUDA, then CPU, whichever onnxruntime offers.",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="Graph optimization level."
    )


def choose_providers(requested: list[str] | None) -> tuple[list[str], str]:
    """The providers to use and a sentence saying why, from what this onnxruntime offers."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not requested:
        chosen = [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
        return chosen, f"fastest available of {available}"
    missing = [p for p in requested if p not in available]
    chosen = [p for p in requested if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # the fallback for ops the others lack
    why = "as configured"
    if missing:
        why = (
            f"requested {missing} not available in this onnxruntime (it has {available}; "
            f"GPU providers need the 'gpu' extra and the vendor libraries)"
        )
    return chosen, why


class OnnxRuntime:
    """One InferenceSession; ``run`` is safe to call from several threads (ORT guarantees it)."""

    def __init__(
        self, bundle: Bundle, threads: int = 2, options: OnnxOptions | None = None
    ) -> None:
        import onnxruntime as ort  # ModuleNotFoundError here names the extra (load_runtime)

        options = options or OnnxOptions()
        spec = bundle.manifest.input
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        level = OPTIMIZATION_LEVELS[options.graph_optimization]
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        opts.log_severity_level = 3  # warnings from ORT about unused initialisers are noise
        # Idle worker threads spin-wait by default, burning ~0.6 of a core between frames of a
        # camera paced at 15 fps (measured 2.37 s vs 0.20 s of CPU over 5 s): bad on a device.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen, why = choose_providers(options.providers)
        try:
            self._session = ort.InferenceSession(
                str(bundle.model_path), sess_options=opts, providers=chosen
            )
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelRuntimeError(
                f"bundle {bundle.source}: {bundle.manifest.model.file}: onnxruntime cannot load "
                f"the model: {exc}"
            ) from exc
        inputs = {i.name: i for i in self._session.get_inputs()}
        if spec.name is None and len(inputs) != 1:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: manifest input.name must name one of "
                f"the model's inputs {sorted(inputs)}"
            )
        self.input_name = spec.name or next(iter(inputs))
        if self.input_name not in inputs:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: manifest input.name "
                f"{self.input_name!r} is not a model input; the model has "
                f"{sorted(inputs)}"
            )
        want = _ORT_DTYPES.get(inputs[self.input_name].type)
        if want is None or np.dtype(want) != np.dtype(spec.dtype):
            raise ModelRuntimeError(
                f"bundle {bundle.source}: manifest input.dtype {spec.dtype!r} "
                f"but the model expects {inputs[self.input_name].type}"
            )
        self.output_names = [o.name for o in self._session.get_outputs()]
        # What the file states about its input (ONNX image metadata), for Predictor.prove.
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.provider = self._session.get_providers()[0]
        log.info("onnxruntime runs %s on %s (%s)", bundle.manifest.model.file, self.provider, why)
        self._warm_up(bundle, spec.width, spec.height, spec.layout, want)

    def _warm_up(self, bundle: Bundle, width: int, height: int, layout: str, dtype: type) -> None:
        """One inference at load: the first run allocates and optimises, which would
        otherwise land on the first frame and its latency figure."""
        shape = (1, 3, height, width) if layout == "NCHW" else (1, height, width, 3)
        try:
            self.run(np.zeros(shape, dtype))
        except Exception as exc:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: {bundle.manifest.model.file}: the warm-up inference "
                f"failed with input shape {shape} (manifest input: width, height, layout): {exc}"
            ) from exc

    def to_input(self, tensor: np.ndarray) -> np.ndarray:
        return tensor  # QDQ models take float inputs and quantize inside the graph

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        values = self._session.run(self.output_names, {self.input_name: tensor})
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self._session = None
