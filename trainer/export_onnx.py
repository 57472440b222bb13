"""The graph a bundle holds, and its ONNX export (legacy TorchScript exporter, opset 17).

Why the legacy exporter: the dynamo exporter (torch 2.13/2.14) writes graphs that load and run
but are silently wrong (top-1 agreement 0.25 measured here: docs/export.md), and puts weights in
a side file that breaks ``quant_pre_process``. Why the SSD's raw head: torchvision's batched NMS
does not export through dynamo or litert-torch, and decoding on the device (``ssd_anchors``)
reproduces torchvision's post-processing exactly (tests/test_ssd_parity.py). No torchvision
transform is inside the graph either: the device normalises per the manifest's mean/std/scale."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD

#: ONNX opset: the newest the legacy exporter handles well, and onnxruntime >= 1.17 runs.
OPSET = 17
INPUT_NAME = "images"
#: Output names, in graph order. The manifest's decoder names them, the TFLite signature too.
CLASSIFIER_OUTPUTS = ("logits",)
SSD_OUTPUTS = ("loc", "logits")


class ExportModule(nn.Module):
    """``images`` (float, NCHW or NHWC) -> named raw outputs.

    Classifiers: ``logits`` (1, C). SSD: ``loc`` (1, A, 4) box encodings and ``logits``
    (1, A, C + 1) with the background in column 0. ``nhwc`` puts a permute in front, because
    TFLite users (and the XNNPACK delegate) expect channels last.
    """

    def __init__(self, model: nn.Module, nhwc: bool = False) -> None:
        super().__init__()
        self.detector = isinstance(model, SSD)
        self.nhwc = nhwc
        if self.detector:
            self.backbone = model.backbone
            self.head = model.head
        else:
            self.model = model
        self.output_names = SSD_OUTPUTS if self.detector else CLASSIFIER_OUTPUTS

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.nhwc:
            images = images.permute(0, 3, 1, 2)
        if not self.detector:
            return {"logits": self.model(images)}
        features = list(self.backbone(images).values())
        out = self.head(features)
        return {"loc": out["bbox_regression"], "logits": out["cls_logits"]}


def sample_input(size: int, nhwc: bool = False) -> torch.Tensor:
    """A (1, 3, size, size) or (1, size, size, 3) tensor to trace or convert with."""
    shape = (1, size, size, 3) if nhwc else (1, 3, size, size)
    return torch.zeros(shape)


@torch.no_grad()
def ssd_anchors(model: SSD, size: int) -> np.ndarray:
    """The SSD's default boxes as normalised xyxy (N, 4) float32, as ``anchors.npy`` holds them.

    They come from the model's own ``anchor_generator`` on the feature maps of a ``size`` input,
    so they line up with the head's outputs row for row (checked here).
    """
    images = torch.zeros(1, 3, size, size)
    features = list(model.backbone(images).values())
    anchors = model.anchor_generator(ImageList(images, [(size, size)]), features)[0]
    head = model.head(features)["bbox_regression"]
    if head.shape[1] != anchors.shape[0]:
        raise ValueError(
            f"SSD head gives {head.shape[1]} boxes but the anchor generator {anchors.shape[0]}"
        )
    return (anchors / size).numpy().astype(np.float32)


def box_coder_weights(model: SSD) -> list[float]:
    """The weights torchvision's BoxCoder encodes with (SSD: 10, 10, 5, 5), in xywh order."""
    return [float(w) for w in model.box_coder.weights]


@torch.no_grad()
def export_onnx(module: ExportModule, path: Path, size: int) -> Path:
    """Write ``module`` to ``path`` with a fixed (1, 3, size, size) input named ``images``."""
    if module.nhwc:
        raise ValueError("ONNX bundles take NCHW input: build the ExportModule with nhwc=False")
    module.eval()
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation on every call; we chose it on purpose.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            module,
            (sample_input(size),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(module.output_names),
            do_constant_folding=True,
        )
    return path


def torch_reference(module: ExportModule) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A numpy-in, numpy-out callable of ``module`` for trainer.parity (which has no torch)."""
    module.eval()

    @torch.no_grad()
    def run(tensor: np.ndarray) -> dict[str, np.ndarray]:
        out = module(torch.from_numpy(np.ascontiguousarray(tensor)))
        return {name: value.numpy() for name, value in out.items()}

    return run
