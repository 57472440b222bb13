"""SSD anchors: read from a bundle file, or generated like the TensorFlow Object Detection API.

Anchors are returned as float32 (N, 4) ``cx, cy, w, h`` normalised to the input tensor, the
form the box coder needs. The generator reproduces ``create_ssd_anchors`` /
``MultipleGridAnchorGenerator`` (tensorflow/models research/object_detection/anchor_generators/
multiple_grid_anchor_generator.py), which TF model zoo SSDs and MediaPipe's SsdAnchorsCalculator
share, so SSD MobileNet exports from those tools decode without their post-processing op.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge_agent.bundle.manifest import AnchorGenerator, SsdAnchorsDecoder
from edge_agent.geometry import boxes_to_xyxy, xyxy_to_cxcywh


class AnchorError(ValueError):
    """The anchors described in the manifest cannot be built or read."""


def _ssd_box_specs(gen: AnchorGenerator) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) pairs per layer, as create_ssd_anchors lays them out."""
    n = gen.num_layers
    if gen.scales:
        scales = [*gen.scales, 1.0]
    elif n == 1:
        scales = [gen.min_scale, 1.0]
    else:
        scales = [gen.min_scale + (gen.max_scale - gen.min_scale) * i / (n - 1) for i in range(n)]
        scales.append(1.0)
    specs = []
    for layer in range(n):
        scale, scale_next = scales[layer], scales[layer + 1]
        if layer == 0 and gen.reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        layer_specs = [(scale, float(ar)) for ar in gen.aspect_ratios]
        if gen.interpolated_scale_aspect_ratio > 0:
            layer_specs.append((math.sqrt(scale * scale_next), gen.interpolated_scale_aspect_ratio))
        specs.append(layer_specs)
    return specs


def _feature_maps(gen: AnchorGenerator, width: int, height: int) -> list[tuple[int, int]]:
    if gen.feature_map_sizes:
        return [(int(h), int(w)) for h, w in gen.feature_map_sizes]
    assert gen.feature_map_strides is not None  # the manifest validator requires one of them
    return [(math.ceil(height / s), math.ceil(width / s)) for s in gen.feature_map_strides]


def generate_ssd_anchors(gen: AnchorGenerator, width: int, height: int) -> np.ndarray:
    """Anchors (N, 4) cx, cy, w, h in [0, 1], ordered layer, row, column, box spec."""
    maps = _feature_maps(gen, width, height)
    specs = _ssd_box_specs(gen)
    if len(maps) != len(specs):
        raise AnchorError(
            f"anchor generator has num_layers={gen.num_layers} but {len(maps)} feature maps"
        )
    # A non-square input keeps anchors square in pixels (TF's scale_height/scale_width).
    min_side = min(width, height)
    base_h = gen.base_anchor_size[0] * min_side / height
    base_w = gen.base_anchor_size[1] * min_side / width
    out = []
    for (rows, cols), layer_specs in zip(maps, specs, strict=True):
        scales = np.array([s for s, _ in layer_specs], np.float64)
        ratio_sqrt = np.sqrt(np.array([a for _, a in layer_specs], np.float64))
        heights = scales / ratio_sqrt * base_h
        widths = scales * ratio_sqrt * base_w
        # Centres step by 1 / map size, as TF does without explicit anchor_strides and as
        # MediaPipe does; feature_map_strides only say how large each map is.
        stride_y, stride_x = 1.0 / rows, 1.0 / cols
        cy = (np.arange(rows) + gen.anchor_offset) * stride_y
        cx = (np.arange(cols) + gen.anchor_offset) * stride_x
        grid_cy, grid_cx, k = np.meshgrid(cy, cx, np.arange(len(layer_specs)), indexing="ij")
        anchors = np.stack([grid_cx, grid_cy, widths[k], heights[k]], axis=-1).reshape(-1, 4)
        out.append(anchors)
    return np.concatenate(out).astype(np.float32)


def load_anchors(
    cfg: SsdAnchorsDecoder, bundle_dir: Path | None, width: int, height: int
) -> np.ndarray:
    """The decoder's anchors as cx, cy, w, h normalised, from file or generator."""
    if cfg.anchor_generator is not None:
        return generate_ssd_anchors(cfg.anchor_generator, width, height)
    if bundle_dir is None or cfg.anchors_file is None:
        raise AnchorError("ssd_anchors needs anchors_file (with the bundle) or anchor_generator")
    path = bundle_dir / cfg.anchors_file
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AnchorError(
            f"{path}: cannot read anchors (.npy float array (N, 4) expected): {exc}"
        ) from exc
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise AnchorError(f"{path}: anchors must have shape (N, 4), but got {raw.shape}")
    anchors = raw.astype(np.float32)
    if cfg.anchors_normalized is False:
        anchors = anchors / np.array([width, height, width, height], np.float32)
    if cfg.anchors_format == "cxcywh":
        return anchors
    return xyxy_to_cxcywh(boxes_to_xyxy(anchors, cfg.anchors_format))
