"""PyTorch -> TFLite with litert-torch (no TensorFlow), FP32 or full INT8 via PT2E.

The module is converted with an NHWC input (``ExportModule(nhwc=True)``), since TFLite users
and the XNNPACK delegate expect channels last. Inputs and outputs are named by the signature
(``serving_default``: input ``images``, outputs ``logits`` or ``loc`` + ``logits``), because the
order of output tensors in a .tflite file is not guaranteed; edge_agent's TFLite runtime finds
them by those signature keys. litert-torch is heavy (jax, ai-edge-quantizer) and sits in its own
extra, so it is imported only here and only when asked for.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainer.export_onnx import ExportModule

INSTALL_HINT = "TFLite export needs the export-tflite extra: pip install 'edgesight[export-tflite]'"


class MissingExtraError(RuntimeError):
    """An optional package the requested export needs is not installed."""


def require_litert() -> ModuleType:
    """Import litert_torch, or say which extra installs it."""
    try:
        import litert_torch
    except ImportError as exc:
        raise MissingExtraError(f"{INSTALL_HINT} (import failed: {exc})") from exc
    return litert_torch


def export_tflite(
    module: ExportModule,
    path: Path,
    size: int,
    calibration: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write ``module`` as a .tflite to ``path``; INT8 (PT2E) when ``calibration`` is given.

    The INT8 file has int8 input and outputs (quantized with the tensors' own scale and zero
    point, which edge_agent's runtime applies), so the bundle's float pre-processing stays.
    """
    if not module.nhwc:
        raise ValueError("TFLite bundles take NHWC input: build the ExportModule with nhwc=True")
    from trainer.export_onnx import INPUT_NAME, sample_input  # torch: only once converting

    litert_torch = require_litert()
    module.eval()
    sample = sample_input(size, nhwc=True)
    # litert-torch prints progress with rich on stdout; the CLI keeps stdout for its results.
    with contextlib.redirect_stdout(sys.stderr):
        if calibration is None:
            converted = litert_torch.convert(module, sample_kwargs={INPUT_NAME: sample})
        else:
            from litert_torch.quantize.quant_config import QuantConfig

            from trainer.quantize import quantize_pt2e

            quantized, quantizer = quantize_pt2e(module, sample, calibration)
            converted = litert_torch.convert(
                quantized,
                sample_kwargs={INPUT_NAME: sample},
                quant_config=QuantConfig(pt2e_quantizer=quantizer),
            )
        converted.export(str(path))
    return path
