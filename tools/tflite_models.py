"""Builds the TFLite twins of tools/toy_models.py's ONNX models into tests/data/.

Run in a venv with litert-torch (it needs torch < 2.15, so not the agent's venv):
    pip install torch==2.14.1 litert-torch && python -m tools.tflite_models tests/data
The outputs are committed (a few KB) so the tests need only ai-edge-litert.
"""

from __future__ import annotations

import sys
from pathlib import Path

import litert_torch
import numpy as np
import torch
from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
from litert_torch.quantize.quant_config import QuantConfig
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from tools.toy_models import colour_matrix, window_grid

SIZE, CELL, STRIDE = 160, 32, 16


class ColourBlocks(torch.nn.Module):
    """Same computation as toy_models.colour_blocks_detector, NHWC in."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.AvgPool2d(CELL, STRIDE)
        self.register_buffer("m", torch.from_numpy(colour_matrix()))
        self.register_buffer("grid", torch.from_numpy(window_grid(SIZE, CELL, STRIDE))[None])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(images.permute(0, 3, 1, 2))
        per_window = pooled.flatten(2).transpose(1, 2)
        return self.grid + 0 * images.mean(), per_window @ self.m


class MeanColour(torch.nn.Module):
    """toy_models.mean_colour_classifier: logits = mean colour @ (4 * colour_matrix), as a
    1x1 convolution first so the quantizer quantizes the input too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(colour_matrix() * 4).T[:, :, None, None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images.permute(0, 3, 1, 2)).mean(dim=(2, 3))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sample = (torch.rand(1, SIZE, SIZE, 3),)
    litert_torch.convert(ColourBlocks().eval(), sample).export(str(out / "colour_blocks.tflite"))

    model = MeanColour().eval()
    sample = (torch.rand(1, 32, 32, 3),)
    litert_torch.convert(model, sample).export(str(out / "mean_colour.tflite"))
    exported = torch.export.export(model, sample).module()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(exported, quantizer)
    rng = np.random.default_rng(0)
    for _ in range(32):  # calibrate over solid colours, the classifier's whole input range
        colour = torch.from_numpy(rng.random(3, dtype=np.float32))
        prepared(colour.expand(1, 32, 32, 3).contiguous())
    quantized = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(
        quantized, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)
    ).export(str(out / "mean_colour.int8.tflite"))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data"))
