"""The manifest's input against what the model file states about it, where it does: ONNX's
image metadata (``Image.BitmapPixelFormat``, ``Image.NominalPixelRange``; Custom Vision and
WinML exports carry them). ``inspect-model`` reads the same keys (runtimes/metadata.py) to fill
a skeleton; this checks a finished manifest. Dtypes are the runtimes' own check at load."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge_agent.bundle.manifest import InputSpec
from edge_agent.decoders.check import Problem
from edge_agent.runtimes.metadata import (
    ONNX_COLOR_KEY,
    ONNX_COLORS,
    ONNX_PIXEL_RANGES,
    ONNX_RANGE_KEY,
    lookup,
    metadata_value,
)

#: How far (as a share of the stated span) the manifest's tensor range may sit from it.
PIXEL_RANGE_TOLERANCE = 0.05


def check_input(spec: InputSpec, metadata: Mapping[str, str]) -> list[Problem]:
    problems = []
    color_name = metadata_value(metadata, ONNX_COLOR_KEY)
    color = lookup(ONNX_COLORS, color_name) if color_name else None
    if color is not None and color != spec.color:
        problems.append(
            Problem(
                "input.color",
                f"{color} (the model's {ONNX_COLOR_KEY} is {color_name})",
                spec.color,
            )
        )
    range_name = metadata_value(metadata, ONNX_RANGE_KEY)
    stated = lookup(ONNX_PIXEL_RANGES, range_name) if range_name else None
    if stated is not None and spec.dtype == "float32":
        mean, std = np.asarray(spec.mean), np.asarray(spec.std)
        low = float(np.min((0.0 - mean) / std))
        high = float(np.max((255.0 * spec.scale - mean) / std))
        slack = PIXEL_RANGE_TOLERANCE * (stated[1] - stated[0])
        if abs(low - stated[0]) > slack or abs(high - stated[1]) > slack:
            problems.append(
                Problem(
                    "input.scale",
                    f"scale, mean and std giving {stated[0]:g} to {stated[1]:g} (the model's "
                    f"{ONNX_RANGE_KEY} is {range_name})",
                    f"scale {spec.scale:.6g}, mean {list(spec.mean)}, std {list(spec.std)}: "
                    f"{low:.4g} to {high:.4g}",
                )
            )
    return problems
