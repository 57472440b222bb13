"""TFLite models with ai-edge-litert, or tflite_runtime where that is what is installed.

Outputs are looked up by name because their order in a .tflite file is not guaranteed
(the TFLite Raspberry Pi examples do the same: github.com/tensorflow/examples, lite/examples/
object_detection/raspberry_pi). Quantized inputs and outputs are converted with the tensor's own
scale and zero point, so a bundle's pre-processing stays the same for FP32 and INT8 files.
"""

from __future__ import annotations

import ctypes.util
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.runtimes.errors import ModelRuntimeError

if TYPE_CHECKING:
    from edge_agent.bundle import Bundle

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


class TfliteOptions(BaseModel):
    """``model.tflite`` in the agent config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edgetpu: bool = Field(False, description="Run on a Coral Edge TPU (libedgetpu).")


def interpreter_module() -> Any:
    """LiteRT's interpreter module, or tflite_runtime's where that is what is installed (Raspberry
    Pi images often ship it); ModuleNotFoundError names ai_edge_litert when neither is."""
    try:
        from ai_edge_litert import interpreter
    except ModuleNotFoundError as exc:
        try:
            from tflite_runtime import interpreter
        except ModuleNotFoundError:
            raise exc from None
    return interpreter


def edgetpu_available() -> bool:
    return ctypes.util.find_library("edgetpu") is not None


def _quantize(values: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(values / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


class TfliteRuntime:
    """One interpreter; ``run`` holds a lock because an interpreter is not thread-safe."""

    def __init__(
        self, bundle: Bundle, threads: int = 2, options: TfliteOptions | None = None
    ) -> None:
        lite = interpreter_module()
        edgetpu = (options or TfliteOptions()).edgetpu
        spec = bundle.manifest.input
        path = str(bundle.model_path)
        delegates = []
        if edgetpu:
            try:
                delegates.append(lite.load_delegate(EDGETPU_LIBRARY))
            except (OSError, ValueError) as exc:
                raise ModelRuntimeError(
                    f"Edge TPU requested but {EDGETPU_LIBRARY} cannot be loaded: {exc}"
                ) from exc
        try:
            self._interp = lite.Interpreter(
                model_path=path, num_threads=threads, experimental_delegates=delegates or None
            )
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: {bundle.manifest.model.file}: the "
                f"TFLite interpreter cannot load the model: {exc}"
            ) from exc
        self._lock = threading.Lock()
        inputs = self._named(self._interp.get_input_details(), "inputs")
        outputs = self._named(self._interp.get_output_details(), "outputs")
        if spec.name is None and len({d["index"] for d in inputs.values()}) != 1:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: manifest input.name must name one "
                f"of the model's inputs {sorted(inputs)}"
            )
        name = spec.name or next(iter(inputs))
        if name not in inputs:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: manifest input.name {name!r} is not "
                f"a model input; the model has {sorted(inputs)}"
            )
        self.input_name = name
        self._input = inputs[name]
        want = np.dtype(spec.dtype)
        have = np.dtype(self._input["dtype"])
        if want != have and not (want == np.float32 and have in (np.int8, np.uint8)):
            raise ModelRuntimeError(
                f"bundle {bundle.source}: manifest input.dtype {spec.dtype!r} "
                f"but the model expects {have.name}"
            )
        self._input_dtype = have
        self._outputs = outputs
        self._by_index = {d["index"]: d for d in outputs.values()}
        self._output_indices = sorted(self._by_index)
        self.output_names = sorted(outputs)
        self.delegate = "edgetpu" if delegates else "xnnpack"
        shape = tuple(int(d) for d in self._input["shape"])
        try:  # warm-up: the first invoke prepares XNNPACK's kernels
            self.run(np.zeros(shape, want))
        except (RuntimeError, ValueError) as exc:
            raise ModelRuntimeError(
                f"bundle {bundle.source}: {bundle.manifest.model.file}: the warm-up inference "
                f"failed with input shape {shape}: {exc}"
            ) from exc

    def _named(self, details: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
        """Each tensor by its tensor name and, when the model has a signature, its key."""
        named = {d["name"]: d for d in details}
        by_index = {d["index"]: d for d in details}
        try:
            signatures = self._interp.get_signature_list()
            for key in signatures:
                runner = self._interp.get_signature_runner(key)
                sig = (
                    runner.get_input_details() if kind == "inputs" else runner.get_output_details()
                )
                for alias, d in sig.items():
                    if d["index"] in by_index:
                        named.setdefault(alias, by_index[d["index"]])
        except (ValueError, AttributeError):  # no signatures, or an old tflite_runtime
            pass
        return named

    def to_input(self, tensor: np.ndarray) -> np.ndarray:
        if tensor.dtype == np.float32 and self._input_dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            return _quantize(tensor, self._input_dtype, scale, zero_point)
        return tensor

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        detail = self._input
        tensor = self.to_input(tensor)  # a no-op for tensors from to_input
        with self._lock:
            self._interp.set_tensor(detail["index"], tensor)
            self._interp.invoke()
            raw = {i: self._interp.get_tensor(i) for i in self._output_indices}
        values = {}
        for index, value in raw.items():
            o_scale, o_zero = self._by_index[index]["quantization"]
            if o_scale and value.dtype != np.float32:
                value = (value.astype(np.float32) - o_zero) * o_scale
            values[index] = value
        # Aliases (tensor name, signature key) share one array object per tensor.
        return {name: values[d["index"]] for name, d in self._outputs.items()}

    def close(self) -> None:
        self._interp = None
