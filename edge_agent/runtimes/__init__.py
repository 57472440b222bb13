"""Runtime registry: each runtime module is imported only when asked for, and its package
(onnxruntime, LiteRT) only when a model is loaded, so a device needs only the package of the
runtime it uses, and a missing one names the extra that installs it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from pydantic import BaseModel

from edge_agent.runtimes.errors import ModelRuntimeError

if TYPE_CHECKING:
    from edge_agent.bundle import Bundle

__all__ = [
    "RUNTIMES",
    "ModelRuntimeError",
    "Runtime",
    "list_runtimes",
    "load_runtime",
]


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
    options: str  # the options model beside the class in the same module
    packages: tuple[str, ...]  # imports that fail when the runtime is absent
    extra: str


RUNTIMES: dict[str, _Entry] = {
    "onnx": _Entry(
        "edge_agent.runtimes.onnx", "OnnxRuntime", "OnnxOptions", ("onnxruntime",), "onnx"
    ),
    "tflite": _Entry(
        "edge_agent.runtimes.tflite",
        "TfliteRuntime",
        "TfliteOptions",
        ("ai_edge_litert", "tflite_runtime"),
        "tflite",
    ),
}


def list_runtimes() -> list[str]:
    return sorted(RUNTIMES)


def _entry(name: str) -> _Entry:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; choose one of {list_runtimes()}") from None


@contextmanager
def needs_runtime_package(name: str) -> Iterator[None]:
    """Turn a missing runtime package into a ModelRuntimeError naming the extra to install."""
    entry = _entry(name)
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in entry.packages:
            raise ModelRuntimeError(
                f"runtime {name!r} is not installed (no module {exc.name!r}): "
                f"pip install 'edgesight[{entry.extra}]'"
            ) from exc
        raise


def load_runtime(
    name: str, bundle: Bundle, threads: int = 2, options: BaseModel | None = None
) -> Runtime:
    """Create the named runtime for ``bundle``; it is warmed up and ready to run.

    ``options`` is that runtime's options model (``OnnxOptions``, ``TfliteOptions``); another
    runtime's options are refused rather than ignored."""
    entry = _entry(name)
    module = importlib.import_module(entry.module)
    cls = getattr(module, entry.options)
    if options is not None and not isinstance(options, cls):
        raise ValueError(
            f"runtime {name!r} takes {entry.options}, but got {type(options).__name__}"
        )
    with needs_runtime_package(name):
        runtime: Runtime = getattr(module, entry.factory)(bundle, threads=threads, options=options)
    return runtime
