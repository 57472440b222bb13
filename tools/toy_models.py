"""Small ONNX models built op by op with ``onnx.helper``, whose outputs are known exactly.

They are real models run by the real runtime, so tests can prove each decoder and the whole
agent path exactly, in milliseconds. Needs the ``onnx`` package (dev extra).

    python -m tools.toy_models OUT_DIR   # writes the colour-blocks bundle (tests, trying the agent)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.bundle import write_manifest

OPSET = 17
COLOUR_LABELS = ["red", "green", "blue"]  # RGB channel order of the input tensor


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime since 1.14
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def colour_matrix() -> np.ndarray:
    """Score of colour c = channel c minus the other two: pure red -> [1, -1, -1], white -> -1."""
    return (2 * np.eye(3) - np.ones((3, 3))).astype(np.float32)


def mean_colour_classifier(path: Path, size: int = 32, weights: np.ndarray | None = None) -> Path:
    """images (1, 3, size, size) -> logits (1, C) = mean colour per channel @ weights."""
    w = colour_matrix() * 4 if weights is None else weights.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        ],
        "mean_colour_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, w.shape[1]])],
        [numpy_helper.from_array(w, "W")],
    )
    return _save(graph, path)


def window_grid(size: int, cell: int, stride: int) -> np.ndarray:
    """Normalised xyxy of every pooling window, in the row-major order AveragePool emits."""
    starts = np.arange(0, size - cell + 1, stride, dtype=np.float32)
    y0, x0 = np.meshgrid(starts, starts, indexing="ij")
    boxes = np.stack([x0, y0, x0 + cell, y0 + cell], axis=-1).reshape(-1, 4)
    return (boxes / size).astype(np.float32)


def colour_blocks_detector(path: Path, size: int = 160, cell: int = 32, stride: int = 16) -> Path:
    """A sliding-window detector of red, green and blue blocks, in the ``ssd_boxes`` shape.

    images (1, 3, size, size) in [0, 1] -> boxes (1, N, 4) normalised xyxy (the fixed windows)
    and scores (1, N, 3): each window's mean colour through ``colour_matrix``. A block of
    ``cell`` pixels scores 1 in the window that holds it.
    """
    grid = window_grid(size, cell, stride)
    n = len(grid)
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool",
                ["images"],
                ["pooled"],
                kernel_shape=[cell, cell],
                strides=[stride, stride],
            ),
            helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),  # (1, 3, N)
            helper.make_node("Transpose", ["flat"], ["per_window"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["per_window", "M"], ["scores"]),
        ],
        "colour_blocks_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, 3]),
        ],
        [
            numpy_helper.from_array(np.array([1, 3, n], np.int64), "shape"),
            numpy_helper.from_array(colour_matrix(), "M"),
        ],
    )
    graph.node.append(helper.make_node("Identity", ["grid"], ["boxes"]))
    graph.initializer.append(numpy_helper.from_array(grid[np.newaxis], "grid"))
    return _save(graph, path)


def colour_blocks_bundle(
    out: Path,
    size: int = 160,
    cell: int = 32,
    stride: int = 16,
    name: str = "colour-blocks",
    version: int = 1,
) -> Path:
    """A complete bundle around ``colour_blocks_detector``."""
    out.mkdir(parents=True, exist_ok=True)
    colour_blocks_detector(out / "model.onnx", size, cell, stride)
    write_manifest(
        out,
        {
            "schema": "edgesight.bundle/1",
            "name": name,
            "version": version,
            "task": "detect",
            "labels": COLOUR_LABELS,
            "model": {"file": "model.onnx", "format": "onnx", "precision": "fp32"},
            "input": {
                "name": "images",
                "width": size,
                "height": size,
                "layout": "NCHW",
                "dtype": "float32",
                "color": "RGB",
                "resize": "stretch",
            },
            "decoder": {
                "type": "ssd_boxes",
                "outputs": {"boxes": "boxes", "scores": "scores"},
                "box_format": "xyxy",
                "normalized": True,
            },
            # Overlapping windows are 1/3 IoU apart: 0.3 keeps one box per block.
            "thresholds": {"score": 0.5, "nms_iou": 0.3, "max_detections": 50},
            "metrics": {},
            "files": {"model.onnx": ""},
            "created": "2026-11-21T00:00:00Z",
            "trainer": {
                "version": "hand-built",
                "recipe": "tools/toy_models.py colour_blocks_bundle",
            },
        },
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tools.toy_models OUT_DIR")
    print(colour_blocks_bundle(Path(sys.argv[1])))
