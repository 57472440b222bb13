"""A full-size detector bundle for benchmarks: torchvision's SSDLite320-MobileNetV3-Large at
its native 320 px, as built from an ImageNet backbone (the full tail; what a user trains from
a pretrained start), exported to float ONNX with the trainer's own exporter.

Its weights are random (seeded): a benchmark of CPU cost needs the network's arithmetic, not
its answers. The score threshold is set so no random box survives, so the decoder and the
stages cost what they cost on an empty scene and the model's row is not inflated by noise.
Needs the ``train`` extra (PyTorch); about 10 s to build.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from edge_agent.bundle import write_manifest
from trainer.export_onnx import ExportModule, export_onnx, ssd_anchors
from trainer.models import get_model

SIZE = 320
#: Above any softmax score a random network gives: nothing is detected.
NOTHING_SCORE = 0.999


def ssdlite320_bundle(template: Path, out: Path) -> Path:
    """A bundle at ``out`` with the labels, pre-processing and decoder of the SSD bundle at
    ``template`` but the full-size network at 320 px."""
    manifest = json.loads((template / "manifest.json").read_text(encoding="utf-8"))
    labels = manifest["labels"]
    torch.manual_seed(0)
    model = get_model("ssdlite320_mobilenet_v3_large", len(labels), size=SIZE, reduced_tail=False)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(ExportModule(model), out / "model.onnx", SIZE)
    np.save(out / "anchors.npy", ssd_anchors(model, SIZE))
    manifest.update(
        name="ssdlite320-full",
        model={"file": "model.onnx", "format": "onnx", "precision": "fp32"},
        input={**manifest["input"], "width": SIZE, "height": SIZE},
        decoder={**manifest["decoder"], "anchors_file": "anchors.npy"},
        thresholds={**manifest["thresholds"], "score": NOTHING_SCORE, "per_class": {}},
        files={"model.onnx": "", "anchors.npy": ""},
    )
    write_manifest(out, manifest)
    return out
