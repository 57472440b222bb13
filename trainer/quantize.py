"""INT8 recipes that measured well (docs/export.md), calibrated on tensors the device would make.

Calibration images go through edge_agent's own ``Preprocessor`` with the bundle's input spec,
so the activation ranges the quantizer records are those of the device's real inputs (a
different resize or normalisation here would clip or waste INT8 range there).

- ONNX Runtime: ``quant_pre_process`` then ``quantize_static`` in QDQ form, per-channel INT8
  weights, UINT8 activations. ``quantize_dynamic`` was 3-8x slower and S8S8 activations 4x
  slower on these conv nets.
- litert-torch: ``torch.export`` -> ``prepare_pt2e`` (symmetric per-channel) -> calibrate ->
  ``convert_pt2e(fold_quantize=False)``; trainer.export_tflite converts the result.
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


def quantize_pt2e(module: Any, sample: Any, tensors: Sequence[np.ndarray]) -> tuple[Any, Any]:
    """PT2E INT8 of ``module`` (an ExportModule): (quantized graph module, its quantizer).

    ``sample`` is the example input tensor; ``tensors`` the calibration inputs in the module's
    layout. Needs litert-torch (trainer.export_tflite checks for it first).
    """
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(module.eval(), (), {"images": sample}).module()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = move_exported_model_to_eval(prepare_pt2e(exported, quantizer))
    # The activation observers are histograms: the first calibration batches, which widen the
    # ranges, cost up to ~2 s each on 2 CPU cores; later ones ~0.1 s.
    with torch.no_grad():
        for tensor in tensors:
            prepared(images=torch.from_numpy(np.ascontiguousarray(tensor)))
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    return quantized, quantizer
