"""INT8 recipes that measured well (docs/export.md), calibrated on tensors the device would make.

Calibration images go through edge_agent's own ``Preprocessor`` with the bundle's input spec,
so the activation ranges the quantizer records are those of the device's real inputs (a
different resize or normalisation here would clip or waste INT8 range there).

- ONNX Runtime: ``quant_pre_process`` then ``quantize_static`` in QDQ form, per-channel INT8
  weights, UINT8 activations. ``quantize_dynamic`` was 3-8x slower and S8S8 activations 4x
  slower on these conv nets.
- litert-torch: ``torch.export`` -> ``prepare_pt2e`` (symmetric per-channel) -> calibrate ->
  ``convert_pt2e(fold_quantize=False)``; trainer.export_tflite converts the result. The SSD's
  box-regression head stays float (``SSD_FLOAT_MODULES``): quantized, its output (the box
  encodings) came out int8 over about a fifth of its float range, so large offsets saturated
  and boxes lost their place (mAP@.75 fell 3.5 points on the demo run, mAP@.5 did not move).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.bundle.manifest import InputSpec
from edge_agent.preprocess import Preprocessor
from trainer.datasets import Sample
from trainer.errors import InputError

log = logging.getLogger(__name__)

#: Calibration images by default: 50-100 measured enough here (docs/export.md) for these nets.
CALIB_IMAGES = 100
#: Submodules of trainer.export_onnx.ExportModule that PT2E leaves float in an SSD. Measured on
#: the demo run (docs/export.md, "INT8 and boxes"): the box encodings span about [-14, 12] in
#: float and each feature level's observer kept nearly its full range, but the concatenation
#: that ends the head, the graph's output, gets no observer; the converter warns ("Missing
#: quantization parameter on the output") and the all-int8 file's ``loc`` came out int8 over
#: [-3.36, 2.17]: every large offset saturated. A float regression head costs 5.6 % more file;
#: its input, the backbone's features, stays int8.
SSD_FLOAT_MODULES = ("head.regression_head",)


def read_bgr(sample: Sample) -> np.ndarray:
    """The sample's image as the device gets frames: BGR uint8 (H, W, 3)."""
    image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{sample.image_path}: cannot read image")
    return image


def calibration_samples(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """``n`` training samples picked with ``seed`` (all of them when there are fewer)."""
    if n < 1:
        raise InputError(f"calibration needs at least 1 image, got {n}")
    ordered = sorted(samples, key=lambda s: str(s.image_path))
    if len(ordered) <= n:
        return ordered
    return random.Random(seed).sample(ordered, n)


def calibration_tensors(samples: Sequence[Sample], spec: InputSpec) -> list[np.ndarray]:
    """Each sample preprocessed exactly as edge_agent does it: (1, ...) float32 tensors."""
    preprocess = Preprocessor(spec)
    return [preprocess(read_bgr(s))[0] for s in samples]


class TensorReader:
    """The ``CalibrationDataReader`` protocol over a list of tensors: one feed dict per call."""

    def __init__(self, input_name: str, tensors: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.tensors = list(tensors)
        self._it: Iterator[np.ndarray] = iter(self.tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._it, None)
        return None if tensor is None else {self.input_name: tensor}

    def rewind(self) -> None:
        self._it = iter(self.tensors)


def quantize_onnx(
    fp32: Path, out: Path, tensors: Sequence[np.ndarray], input_name: str, workdir: Path
) -> Path:
    """Static QDQ INT8 of ``fp32`` into ``out``; inputs and outputs stay float32."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / f"{fp32.stem}.pre.onnx"
    # Symbolic shape inference and ORT's graph optimisations first, as ORT's quantization docs
    # recommend: fused ops get one activation range instead of one per op they replaced.
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(out),
        TensorReader(input_name, tensors),  # type: ignore[arg-type]  # duck-typed reader
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink(missing_ok=True)
    return out


def module_paths(node: Any) -> list[str]:
    """The dotted paths of the modules an exported graph's node came from, outermost first.

    ``nn_module_stack`` is what torch.export records; its values are (path, type) pairs whose
    path spelling varies between torch versions (``L['self'].head.x`` or ``head.x``), so the
    ``L['self'].`` prefix is dropped. Matching on these, rather than litert-torch's
    ``set_module_name`` (which rebuilds names from the stack's keys), is what found the nodes
    under torch 2.14: ``set_module_name("head.regression_head")`` matched none.
    """
    stack = node.meta.get("nn_module_stack") or {}
    return [str(path).removeprefix("L['self'].") for path, _ in stack.values()]


def in_modules(node: Any, prefixes: Sequence[str]) -> bool:
    """Whether ``node`` comes from one of the modules ``prefixes`` names (or a submodule)."""
    return any(
        path == p or path.startswith(p + ".") for path in module_paths(node) for p in prefixes
    )


def float_modules(module: Any) -> tuple[str, ...]:
    """What PT2E leaves float in ``module``: the SSD's regression head, nothing elsewhere."""
    return SSD_FLOAT_MODULES if getattr(module, "detector", False) else ()


def make_quantizer(keep_float: Sequence[str]) -> Any:
    """litert-torch's PT2EQuantizer (symmetric, per-channel), leaving the nodes of the modules
    ``keep_float`` names unannotated, hence float. ``kept_float`` lists them after annotation;
    a name that matches no node is an error, not a silently quantized head."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    class FloatModulesQuantizer(PT2EQuantizer):
        def __init__(self) -> None:
            super().__init__()
            self.keep_float = tuple(keep_float)
            self.kept_float: list[str] = []

        def annotate(self, model: Any) -> Any:
            # The whole graph is annotated first (with the propagation of shared qparams
            # through views), then the named modules' nodes lose their annotation: nothing
            # outside them shares a spec with a node inside (their first ops are convs).
            model = super().annotate(model)
            for node in model.graph.nodes:
                if self.keep_float and in_modules(node, self.keep_float):
                    if node.meta.pop("quantization_annotation", None) is not None:
                        self.kept_float.append(node.name)
            if self.keep_float and not self.kept_float:
                raise ValueError(
                    f"none of the exported graph's nodes comes from {list(self.keep_float)}: "
                    "they would be quantized (module paths changed in this torch version?)"
                )
            return model

    config = get_symmetric_quantization_config(is_per_channel=True)
    return FloatModulesQuantizer().set_global(config)


def quantize_pt2e(module: Any, sample: Any, tensors: Sequence[np.ndarray]) -> tuple[Any, Any]:
    """PT2E INT8 of ``module`` (an ExportModule): (quantized graph module, its quantizer).

    ``sample`` is the example input tensor; ``tensors`` the calibration inputs in the module's
    layout. An SSD's regression head stays float (``SSD_FLOAT_MODULES``). Needs litert-torch
    (trainer.export_tflite checks for it first).
    """
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(module.eval(), (), {"images": sample}).module()
    quantizer = make_quantizer(float_modules(module))
    prepared = move_exported_model_to_eval(prepare_pt2e(exported, quantizer))
    # The activation observers are histograms: the first calibration batches, which widen the
    # ranges, cost up to ~2 s each on 2 CPU cores; later ones ~0.1 s.
    with torch.no_grad():
        for tensor in tensors:
            prepared(images=torch.from_numpy(np.ascontiguousarray(tensor)))
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    return quantized, quantizer
