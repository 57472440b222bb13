"""``edge-agent inspect-model``: what a model file takes and gives, and a manifest to complete.

For users who bring a model made elsewhere (TF model zoo, Model Maker, Custom Vision export):
the printed names, shapes, dtypes and quantization are what the manifest must name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bundle import sha256_file
from edge_agent.bundle.manifest import SCHEMA, Thresholds
from edge_agent.runtimes import ModelRuntimeError, needs_runtime_package
from edge_agent.runtimes.tflite import interpreter_module

POSTPROCESS_OP = "TFLite_Detection_PostProcess"


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


def _onnx_tensors(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
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

    return [info(t) for t in session.get_inputs()], [info(t) for t in session.get_outputs()]


def _tflite_tensors(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
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
    )


def read_tensors(path: Path) -> tuple[str, list[TensorInfo], list[TensorInfo]]:
    """(format, inputs, outputs) of an .onnx or .tflite file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx", *_onnx_tensors(path)
    if suffix == ".tflite":
        return "tflite", *_tflite_tensors(path)
    raise ValueError(f"{path}: expected a .onnx or .tflite file, got {suffix or 'no suffix'!r}")


def _input_spec(tensor: TensorInfo) -> dict[str, Any]:
    dims = [d if isinstance(d, int) else -1 for d in tensor.shape]
    nchw = len(dims) == 4 and dims[1] == 3
    h, w = (dims[2], dims[3]) if nchw else (dims[1], dims[2]) if len(dims) == 4 else (-1, -1)
    spec: dict[str, Any] = {
        "name": tensor.name,
        "width": w,
        "height": h,
        "layout": "NCHW" if nchw else "NHWC",
        "dtype": tensor.dtype if tensor.dtype in ("uint8", "int8") else "float32",
        "color": "RGB",
        "resize": "stretch",
    }
    if spec["dtype"] == "float32":
        spec.update(scale=1 / 255, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    return spec


def _guess_decoder(outputs: list[TensorInfo]) -> tuple[str, dict[str, Any], int]:
    """(task, decoder, number of classes or -1) from the output shapes; a starting point."""
    names = [o.name for o in outputs]
    if len(outputs) == 4 and any(POSTPROCESS_OP in n for n in names):
        ordered = sorted(names)  # name, name:1, name:2, name:3 = boxes, classes, scores, count
        keys = ("boxes", "classes", "scores", "count")
        return (
            "detect",
            {
                "type": "tflite_detection_postprocess",
                "outputs": dict(zip(keys, ordered, strict=True)),
            },
            -1,
        )
    if len(outputs) == 1:
        return (
            "classify",
            {"type": "softmax", "output": names[0], "from_logits": True},
            (int(outputs[0].shape[-1]) if isinstance(outputs[0].shape[-1], int) else -1),
        )
    boxes = next((o for o in outputs if o.shape and o.shape[-1] == 4), None)
    scores = next((o for o in outputs if o is not boxes and len(o.shape) >= 2), None)
    if boxes is not None and scores is not None:
        n = int(scores.shape[-1]) if isinstance(scores.shape[-1], int) else -1
        return (
            "detect",
            {
                "type": "ssd_anchors or ssd_boxes: raw encodings need ssd_anchors",
                "outputs": {"boxes": boxes.name, "scores": scores.name},
            },
            n,
        )
    return "detect", {"type": "TODO", "outputs": {o.name: "TODO" for o in outputs}}, -1


def manifest_skeleton(
    path: Path, fmt: str, inputs: list[TensorInfo], outputs: list[TensorInfo]
) -> dict[str, Any]:
    """A manifest with everything the file says filled in and TODO where a person decides."""
    task, decoder, n_classes = _guess_decoder(outputs)
    labels = [f"TODO_class_{i}" for i in range(max(n_classes, 1))]
    return {
        "schema": SCHEMA,
        "name": path.stem,
        "version": 1,
        "task": task,
        "labels": labels,
        "model": {
            "file": path.name,
            "format": fmt,
            "precision": "int8" if any(t.quantization for t in inputs + outputs) else "fp32",
        },
        "input": _input_spec(inputs[0]),
        "decoder": decoder,
        "thresholds": Thresholds().model_dump(exclude={"per_class"}),
        "files": {path.name: sha256_file(path)},
    }


def inspect_model(path: Path, manifest_out: Path | None = None) -> str:
    """The report printed by the command; writes the skeleton when asked."""
    fmt, inputs, outputs = read_tensors(path)
    lines = [f"{path} ({fmt})", "inputs:"] + [f"  {t.describe()}" for t in inputs]
    lines += ["outputs:"] + [f"  {t.describe()}" for t in outputs]
    if manifest_out is not None:
        skeleton = manifest_skeleton(path, fmt, inputs, outputs)
        manifest_out.write_text(json.dumps(skeleton, indent=2) + "\n")
        lines.append(
            f"manifest skeleton written to {manifest_out}: replace every TODO "
            "(labels, decoder type, colour order, mean/std) before use"
        )
    return "\n".join(lines)
