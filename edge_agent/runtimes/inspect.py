"""``edge-agent inspect-model``: what a model file takes and gives, and a manifest to complete.

For users who bring a model made elsewhere (TF model zoo, Model Maker, Custom Vision export):
the printed names, shapes, dtypes and quantization are what the manifest must name, and the
skeleton (skeleton.py) holds what the file states (metadata.py) and TODO for the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bundle.load import TODO_DOC
from edge_agent.runtimes import ModelRuntimeError, needs_runtime_package
from edge_agent.runtimes.metadata import FileFacts, onnx_facts, tflite_facts
from edge_agent.runtimes.skeleton import manifest_skeleton
from edge_agent.runtimes.tflite import interpreter_module


@dataclass
class TensorInfo:
    name: str
    shape: list[int | str]
    dtype: str
    quantization: tuple[float, int] | None = None  # (scale, zero point) of int tensors

    def describe(self) -> str:
        q = ""
        if self.quantization:
            q = f"  quantized scale={self.quantization[0]:.6g} zero_point={self.quantization[1]}"
        return f"{self.name:<40} {self.dtype:<8} {self.shape}{q}"


def _onnx_read(path: Path) -> tuple[list[TensorInfo], list[TensorInfo], FileFacts]:
    with needs_runtime_package("onnx"):
        import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types (not RuntimeError) for bad files
        raise ModelRuntimeError(f"{path}: onnxruntime cannot load the model: {exc}") from exc

    def info(t: Any) -> TensorInfo:
        dtype = t.type.removeprefix("tensor(").removesuffix(")")
        dtype = "float32" if dtype == "float" else dtype  # ONNX says float for float32 only
        return TensorInfo(t.name, list(t.shape), dtype)

    facts = onnx_facts(dict(session.get_modelmeta().custom_metadata_map))
    return [info(t) for t in session.get_inputs()], [info(t) for t in session.get_outputs()], facts


def _tflite_read(path: Path) -> tuple[list[TensorInfo], list[TensorInfo], FileFacts]:
    with needs_runtime_package("tflite"):
        lite = interpreter_module()
    interp = lite.Interpreter(model_path=str(path))

    def info(d: dict[str, Any]) -> TensorInfo:
        scale, zero = d["quantization"]
        quant = (float(scale), int(zero)) if scale else None
        return TensorInfo(d["name"], [int(x) for x in d["shape"]], d["dtype"].__name__, quant)

    return (
        [info(d) for d in interp.get_input_details()],
        [info(d) for d in interp.get_output_details()],
        tflite_facts(path),
    )


def read_model(path: Path) -> tuple[str, list[TensorInfo], list[TensorInfo], FileFacts]:
    """(format, inputs, outputs, what its metadata states) of an .onnx or .tflite file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx", *_onnx_read(path)
    if suffix == ".tflite":
        return "tflite", *_tflite_read(path)
    raise ValueError(f"{path}: expected a .onnx or .tflite file, got {suffix or 'no suffix'!r}")


def read_tensors(path: Path) -> tuple[str, list[TensorInfo], list[TensorInfo]]:
    """(format, inputs, outputs) of an .onnx or .tflite file."""
    fmt, inputs, outputs, _ = read_model(path)
    return fmt, inputs, outputs


def inspect_model(path: Path, manifest_out: Path | None = None) -> str:
    """The report printed by the command; writes the skeleton when asked."""
    fmt, inputs, outputs, facts = read_model(path)
    lines = [f"{path} ({fmt})", "inputs:"] + [f"  {t.describe()}" for t in inputs]
    lines += ["outputs:"] + [f"  {t.describe()}" for t in outputs]
    if facts.facts and manifest_out is None:  # with a manifest, "read from the file" says it
        lines.append("metadata:")
        lines += [f"  {k}: {f.value!r}  ({f.source})"[:200] for k, f in facts.facts.items()]
    lines += [f"note: {n}" for n in facts.notes]
    if manifest_out is None:
        return "\n".join(lines)
    skeleton, draft = manifest_skeleton(path, fmt, inputs, outputs, facts)
    manifest_out.write_text(json.dumps(skeleton, indent=2) + "\n")
    lines += [f"manifest written to {manifest_out}", "read from the file:"]
    lines += [f"  {r}" for r in draft.read]
    lines += ["written as defaults (change them if they do not fit):"]
    lines += [f"  {d}" for d in draft.defaults]
    if draft.todos:
        width = max(len(p) for p, _ in draft.todos)
        lines.append(
            f"TODO: {len(draft.todos)} fields a person must decide; the manifest is refused "
            f"until each is replaced ({TODO_DOC}):"
        )
        lines += [f"  {p:<{width}}  {what}" for p, what in draft.todos]
    return "\n".join(lines)
