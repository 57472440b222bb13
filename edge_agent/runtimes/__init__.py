"""Runtime registry: each runtime is imported only when asked for, so a device needs only the
package of the runtime it uses, and a missing one names the extra that installs it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_agent.bundle import Bundle


class ModelRuntimeError(RuntimeError):
    """The model cannot be loaded or run (broken file, missing package, wrong input)."""


class Runtime(Protocol):
    """What the pipeline needs of a runtime."""

    input_name: str
    output_names: list[str]

    def to_input(self, tensor: np.ndarray) -> np.ndarray:
        """The pre-processed tensor as the model takes it (quantized inputs: with the input
        tensor's own scale and zero point). Runs on the capture thread, not the inference
        thread."""
        ...

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Entry:
    module: str
    factory: str
    package: str  # the import that fails when the runtime is absent
    extra: str


RUNTIMES: dict[str, _Entry] = {
    "onnx": _Entry("edge_agent.runtimes.onnx", "OnnxRuntime", "onnxruntime", "onnx"),
    "tflite": _Entry("edge_agent.runtimes.tflite", "TfliteRuntime", "tflite_runtime", "tflite"),
}


def list_runtimes() -> list[str]:
    return sorted(RUNTIMES)


def load_runtime(name: str, bundle: Bundle, threads: int = 2, **options: object) -> Runtime:
    """Create the named runtime for ``bundle``; it is warmed up and ready to run.

    ``options`` are runtime-specific (ONNX providers, TFLite delegates)."""
    try:
        entry = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; choose one of {list_runtimes()}") from None
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == entry.package:
            raise ModelRuntimeError(
                f"runtime {name!r} is not installed (no module {exc.name!r}): "
                f"pip install 'edgesight[{entry.extra}]'"
            ) from exc
        raise
    runtime: Runtime = getattr(module, entry.factory)(bundle, threads=threads, **options)
    return runtime
