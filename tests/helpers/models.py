"""Tiny bundles of every decoder type, built op by op like tools/toy_models.py, whose outputs
on a blank frame are known: for proving models against their manifests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.bundle import write_manifest
from tools.toy_models import OPSET, colour_blocks_bundle, colour_matrix, window_grid

DATA = Path(__file__).resolve().parents[1] / "data"
LABELS = ["red", "green", "blue"]
SIZE = 32  # input pixels of the models below, except colour blocks (160)
GRID = 4  # cells per side of the ssd_anchors and yolo_regions models


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    helper.set_model_props(model, metadata or {})
    model.ir_version = 8  # as tools/toy_models.py: readable by every onnxruntime since 1.14
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _images(size: int = SIZE) -> Any:
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])


def _out(name: str, shape: list[int]) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def manifest(
    task: str, decoder: dict[str, Any], model: str = "model.onnx", size: int = SIZE, **extra: Any
) -> dict[str, Any]:
    fmt = "tflite" if model.endswith(".tflite") else "onnx"
    layout = "NHWC" if fmt == "tflite" else "NCHW"
    return {
        "schema": "edgesight.bundle/1",
        "name": f"toy-{decoder['type']}",
        "version": 1,
        "task": task,
        "labels": LABELS,
        "model": {"file": model, "format": fmt},
        "input": {"width": size, "height": size, "layout": layout},
        "decoder": decoder,
        "files": {model: ""},
        **extra,
    }


def write(out: Path, body: dict[str, Any], **changes: Any) -> Path:
    """Write ``body`` with ``changes`` (``labels=...``, ``decoder=...``) as out/manifest.json."""
    write_manifest(out, {**body, **changes})
    return out


def classifier_bundle(
    out: Path,
    softmax_in_graph: bool = False,
    decoder: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    **changes: Any,
) -> Path:
    """Mean colour @ colour_matrix * 4 (+ Softmax): on a blank frame logits 0 (or 1/3 each).
    ``metadata``: the ONNX file's metadata_props (Image.NominalPixelRange, ...)."""
    out.mkdir(parents=True)
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits" if not softmax_in_graph else "x"]),
    ]
    if softmax_in_graph:
        nodes.append(helper.make_node("Softmax", ["x"], ["logits"], axis=-1))
    w = numpy_helper.from_array(colour_matrix() * 4, "W")
    graph = helper.make_graph(nodes, "classifier", [_images()], [_out("logits", [1, 3])], [w])
    _save(graph, out / "model.onnx", metadata)
    return write(out, manifest("classify", decoder or {"type": "softmax"}), **changes)


def ssd_boxes_bundle(out: Path, **changes: Any) -> Path:
    """tools/toy_models.py's colour blocks: boxes (1, 81, 4), scores (1, 81, 3)."""
    colour_blocks_bundle(out)
    body = manifest(
        "detect", {"type": "ssd_boxes", "outputs": {"boxes": "boxes", "scores": "scores"}}
    )
    body["input"] = {"name": "images", "width": 160, "height": 160}
    return write(out, body, **changes)


def _ssd_head(
    out: Path,
    columns: int,
    box_bias: tuple[float, ...] = (0, 0, 0, 0),
    logit_bias: float = 0.0,
    softmax_in_graph: bool = False,
) -> None:
    """images -> GRID x GRID mean colours -> codes (1, N, 4) and logits (1, N, columns); on a
    blank frame every box is ``box_bias`` and every logit ``logit_bias`` (1 / columns after the
    graph's own softmax)."""
    n = GRID * GRID
    cell = SIZE // GRID
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool",
                ["images"],
                ["pooled"],
                kernel_shape=[cell, cell],
                strides=[cell, cell],
            ),
            helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
            helper.make_node("Transpose", ["flat"], ["cells"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["cells", "B"], ["codes"]),
            helper.make_node("Add", ["codes", "box_bias"], ["loc"]),
            helper.make_node("MatMul", ["cells", "S"], ["raw"]),
            helper.make_node("Add", ["raw", "logit_bias"], ["x" if softmax_in_graph else "logits"]),
            *(
                [helper.make_node("Softmax", ["x"], ["logits"], axis=-1)]
                if softmax_in_graph
                else []
            ),
        ],
        "ssd_head",
        [_images()],
        [_out("loc", [1, n, 4]), _out("logits", [1, n, columns])],
        [
            numpy_helper.from_array(np.array([1, 3, n], np.int64), "shape"),
            numpy_helper.from_array(np.zeros((3, 4), np.float32), "B"),
            numpy_helper.from_array(np.array(box_bias, np.float32), "box_bias"),
            numpy_helper.from_array(np.ones((3, columns), np.float32), "S"),
            numpy_helper.from_array(np.array(logit_bias, np.float32), "logit_bias"),
        ],
    )
    _save(graph, out / "model.onnx")


def ssd_head_bundle(
    out: Path,
    decoder: dict[str, Any],
    box_bias: tuple[float, ...] = (0, 0, 0, 0),
    logit_bias: float = 0.0,
    softmax_in_graph: bool = False,
) -> Path:
    """The raw SSD head with 3 labels + background column 0 (outputs loc, logits) under any
    detector decoder (``ssd_boxes`` with pixel boxes, activations, ...)."""
    out.mkdir(parents=True)
    _ssd_head(out, 4, box_bias, logit_bias, softmax_in_graph)
    return write(out, manifest("detect", decoder))


#: One square anchor per cell of the GRID x GRID map: GRID * GRID anchors.
GENERATOR = {
    "num_layers": 1,
    "feature_map_sizes": [[GRID, GRID]],
    "aspect_ratios": [1.0],
    "interpolated_scale_aspect_ratio": 0.0,
    "reduce_boxes_in_lowest_layer": False,
}


def ssd_anchors_bundle(
    out: Path,
    anchors: int | None = GRID * GRID,
    generator: dict[str, Any] | None = None,
    columns: int = 4,
    **changes: Any,
) -> Path:
    """Raw SSD head (background column 0 + 3 labels) with an anchors file of ``anchors`` rows,
    or, with ``generator``, anchor generator parameters instead."""
    out.mkdir(parents=True)
    _ssd_head(out, columns)
    decoder: dict[str, Any] = {
        "type": "ssd_anchors",
        "outputs": {"boxes": "loc", "scores": "logits"},
    }
    body = manifest("detect", decoder)
    if generator is not None:
        decoder["anchor_generator"] = generator
    else:
        grid = window_grid(SIZE, SIZE // GRID, SIZE // GRID)
        np.save(out / "anchors.npy", np.resize(grid, (anchors, 4)))
        decoder["anchors_file"] = "anchors.npy"
        body["files"]["anchors.npy"] = ""
    return write(out, body, **changes)


def yolo_regions_bundle(out: Path, labels: int = 3, **changes: Any) -> Path:
    """A region grid (1, 5 anchors x (5 + labels), GRID, GRID) of zeros."""
    out.mkdir(parents=True)
    channels = 5 * (5 + labels)
    cell = SIZE // GRID
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool",
                ["images"],
                ["pooled"],
                kernel_shape=[cell, cell],
                strides=[cell, cell],
            ),
            helper.make_node("Conv", ["pooled", "K"], ["model_outputs0"]),
        ],
        "yolo_regions",
        [_images()],
        [_out("model_outputs0", [1, channels, GRID, GRID])],
        [numpy_helper.from_array(np.zeros((channels, 3, 1, 1), np.float32), "K")],
    )
    _save(graph, out / "model.onnx")
    return write(out, manifest("detect", {"type": "yolo_regions"}), **changes)


def detections_bundle(
    out: Path, decoder_type: str = "detections", classes: tuple[float, ...] = (0, 2), **changes: Any
) -> Path:
    """Two fixed detections (boxes, classes, scores, count) whatever the frame."""
    out.mkdir(parents=True)
    k = len(classes)
    boxes = np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (1, k, 1))
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
            helper.make_node("Add", ["S", "mean"], ["detected_scores"]),
            helper.make_node("Identity", ["B"], ["detected_boxes"]),
            helper.make_node("Identity", ["C"], ["detected_classes"]),
            helper.make_node("Identity", ["N"], ["num_detections"]),
        ],
        "detections",
        [_images()],
        [
            _out("detected_boxes", [1, k, 4]),
            _out("detected_classes", [1, k]),
            _out("detected_scores", [1, k]),
            _out("num_detections", [1]),
        ],
        [
            numpy_helper.from_array(boxes, "B"),
            numpy_helper.from_array(np.array([classes], np.float32), "C"),
            numpy_helper.from_array(np.full((1, k), 0.9, np.float32), "S"),
            numpy_helper.from_array(np.array([k], np.float32), "N"),
        ],
    )
    _save(graph, out / "model.onnx")
    outputs = {
        "boxes": "detected_boxes",
        "classes": "detected_classes",
        "scores": "detected_scores",
        "count": "num_detections",
    }
    return write(out, manifest("detect", {"type": decoder_type, "outputs": outputs}), **changes)


def tflite_classifier_bundle(out: Path, **changes: Any) -> Path:
    """tests/data/mean_colour.tflite (NHWC, logits (1, 3)) as a softmax classifier."""
    out.mkdir(parents=True)
    shutil.copy(DATA / "mean_colour.tflite", out / "mean_colour.tflite")
    return write(
        out, manifest("classify", {"type": "softmax"}, model="mean_colour.tflite"), **changes
    )
