"""What each decoder needs of the model's outputs, checked once on real outputs before any
frame is decoded (``Predictor.prove``: check-config, check-bundle and the agent's start-up).

The per-frame decoders raise on the first thing that does not fit, on every frame; these
checks look at the same outputs once and name every mismatch at once, each by the manifest
field to change, with what the model needs and what the manifest says. They sit in one module
keyed by the decoders' types (like ``DECODERS``) rather than beside each decoder because they
share their vocabulary (output look-up, score columns, "is this already a probability") and
because they read as one list, the one docs/bundle.md documents; the decoders stay the small
hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle.manifest import (
    DetectionsDecoder,
    Manifest,
    SigmoidDecoder,
    SoftmaxDecoder,
    SsdAnchorsDecoder,
    SsdBoxesDecoder,
    TflitePostprocessDecoder,
    YoloRegionsDecoder,
)
from edge_agent.decoders.anchors import AnchorError, load_anchors
from edge_agent.decoders.ops import Outputs

#: Scores already through a softmax: each row sums to 1 within this and lies in [0, 1]. Loose
#: enough for an INT8 softmax's dequantized steps, tight enough that logits never pass by chance.
ALREADY_SOFTMAX_ATOL = 0.01
#: Outputs the manifest says are probabilities must sum to 1 within this (one softmax row).
PROBABILITY_SUM_ATOL = 0.05
#: Slack around [0, 1] for "these are probabilities" (dequantized outputs overshoot a little).
UNIT_RANGE_SLACK = 0.01


@dataclass(frozen=True)
class Problem:
    """One way the model does not fit its manifest: the field to change, what the model needs,
    what the manifest says (or the model gave)."""

    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, found {self.found}"


class _Checker:
    """Looks outputs up and shapes them as the decoders do, noting a Problem instead of raising."""

    def __init__(self, manifest: Manifest, outputs: Outputs) -> None:
        self.manifest = manifest
        self.outputs = outputs
        self.n_labels = len(manifest.labels)
        self.problems: list[Problem] = []

    def problem(self, field: str, expected: str, found: str) -> None:
        self.problems.append(Problem(field, expected, found))

    def output(
        self, field: str, name: str | None, ndim: int, shape: str
    ) -> tuple[str, np.ndarray] | None:
        """(name, array without its batch of 1), or None after noting why not."""
        names = sorted(self.outputs)
        if name is None:
            distinct = {id(v): k for k, v in self.outputs.items()}  # aliases share an array
            if len(distinct) != 1:
                self.problem(field, f"one of the model's outputs {names} named", "none")
                return None
            name = next(iter(distinct.values()))
        if name not in self.outputs:
            self.problem(field, f"one of the model's outputs {names}", repr(name))
            return None
        array = np.asarray(self.outputs[name])
        if array.ndim == ndim + 1 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != ndim:
            self.problem(field, f"output {name!r} shaped {shape}", f"shape {self.shape(name)}")
            return None
        return name, array

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(np.asarray(self.outputs[name]).shape)

    def score_columns(self, name: str, columns: int, background: int | None) -> None:
        """Scores (N, C): one column per label, plus the background column if there is one."""
        has_bg = background is not None
        where = f"output {name!r} has {columns} score columns"
        if columns == self.n_labels + has_bg:
            if background is not None and not -columns <= background < columns:
                self.problem(
                    "decoder.background_class", f"one of its columns ({where})", str(background)
                )
            return
        if not has_bg and columns == self.n_labels + 1:
            self.problem(
                "decoder.background_class",
                f"the index of the background column ({where} for {self.n_labels} labels)",
                "null",
            )
        elif has_bg and columns == self.n_labels:
            self.problem(
                "decoder.background_class",
                f"null ({where}, one per label: no background column)",
                str(background),
            )
        else:
            bg = ", one of them the background" if has_bg else ""
            self.problem("labels", f"{columns - has_bg} labels ({where}{bg})", str(self.n_labels))


def _range(values: np.ndarray) -> str:
    return f"{float(values.min()):.4g} to {float(values.max()):.4g}"


def _in_unit_range(values: np.ndarray) -> bool:
    return bool(values.min() >= -UNIT_RANGE_SLACK and values.max() <= 1 + UNIT_RANGE_SLACK)


def _rows_sum_to_one(scores: np.ndarray, atol: float) -> bool:
    """Every row (the last axis) is a probability distribution, within ``atol``."""
    sums = scores.astype(np.float64).sum(axis=-1)
    return _in_unit_range(scores) and bool(np.all(np.abs(sums - 1.0) <= atol))


def _score_activation(c: _Checker, name: str, scores: np.ndarray, activation: str) -> None:
    """A detector's scores (N, C) against ``decoder.score_activation``."""
    if activation == "softmax" and scores.shape[1] > 1:
        if _rows_sum_to_one(scores, ALREADY_SOFTMAX_ATOL):
            c.problem(
                "decoder.score_activation",
                f"'none' (every row of output {name!r} already sums to 1: the graph applies "
                "softmax, and a second one flattens the scores)",
                "'softmax'",
            )
    elif activation == "none" and not _in_unit_range(scores):
        c.problem(
            "decoder.score_activation",
            f"'softmax' or 'sigmoid' (output {name!r} holds {_range(scores)}: not "
            "probabilities, while thresholds are)",
            "'none'",
        )


def check_classifier(
    cfg: SoftmaxDecoder | SigmoidDecoder, manifest: Manifest, outputs: Outputs, _dir: Path | None
) -> list[Problem]:
    c = _Checker(manifest, outputs)
    found = c.output("decoder.output", cfg.output, 1, "(1, C)")
    if found is None:
        return c.problems
    name, scores = found
    if len(scores) != c.n_labels:
        c.problem(
            "labels",
            f"{len(scores)} labels (output {name!r} has {len(scores)} scores)",
            str(c.n_labels),
        )
    p = scores.astype(np.float64)
    if cfg.type == "softmax" and cfg.from_logits:
        if len(p) > 1 and _rows_sum_to_one(p, ALREADY_SOFTMAX_ATOL):
            c.problem(
                "decoder.from_logits",
                f"false (output {name!r} already sums to 1 with every score in [0, 1]: the "
                "graph ends in softmax, and a second one flattens the scores)",
                "true",
            )
    elif cfg.type == "softmax" and not _rows_sum_to_one(p, PROBABILITY_SUM_ATOL):
        c.problem(
            "decoder.from_logits",
            f"true (output {name!r} is not probabilities: it sums to {p.sum():.4g}, "
            f"from {_range(p)})",
            "false",
        )
    elif cfg.type == "sigmoid" and not cfg.from_logits and not _in_unit_range(p):
        c.problem(
            "decoder.from_logits",
            f"true (output {name!r} holds {_range(p)}: not probabilities)",
            "false",
        )
    return c.problems


def _ssd_outputs(
    c: _Checker, cfg: SsdBoxesDecoder | SsdAnchorsDecoder
) -> tuple[str, np.ndarray] | None:
    """Boxes (N, 4) and scores (N, C [+1]); returns the boxes output if it has that shape."""
    boxes = c.output("decoder.outputs.boxes", cfg.outputs.boxes, 2, "(1, N, 4)")
    scores = c.output("decoder.outputs.scores", cfg.outputs.scores, 2, "(1, N, C)")
    if boxes is not None and boxes[1].shape[1] != 4:
        c.problem(
            "decoder.outputs.boxes",
            f"output {boxes[0]!r} shaped (1, N, 4)",
            f"shape {c.shape(boxes[0])}",
        )
        boxes = None
    if scores is not None:
        name, array = scores
        c.score_columns(name, array.shape[1], cfg.background_class)
        _score_activation(c, name, array, cfg.score_activation)
        if boxes is not None and len(boxes[1]) != len(array):
            c.problem(
                "decoder.outputs.scores",
                f"one row per box ({len(boxes[1])}, as output {boxes[0]!r} has)",
                f"output {name!r} with {len(array)} rows",
            )
    return boxes


def check_ssd_boxes(
    cfg: SsdBoxesDecoder, manifest: Manifest, outputs: Outputs, _dir: Path | None
) -> list[Problem]:
    c = _Checker(manifest, outputs)
    boxes = _ssd_outputs(c, cfg)
    if boxes is not None and cfg.normalized and float(np.abs(boxes[1]).max(initial=0)) > 2:
        c.problem(
            "decoder.normalized",
            f"false (output {boxes[0]!r} holds {_range(boxes[1])}: input pixels, not [0, 1])",
            "true",
        )
    return c.problems


def check_ssd_anchors(
    cfg: SsdAnchorsDecoder, manifest: Manifest, outputs: Outputs, bundle_dir: Path | None
) -> list[Problem]:
    c = _Checker(manifest, outputs)
    boxes = _ssd_outputs(c, cfg)
    field = "decoder.anchor_generator" if cfg.anchor_generator else "decoder.anchors_file"
    size = manifest.input
    try:
        anchors = load_anchors(cfg, bundle_dir, size.width, size.height)
    except AnchorError as exc:
        c.problem(field, "anchors that can be built", str(exc))
        return c.problems
    if boxes is not None and len(anchors) != len(boxes[1]):
        source = f"in {cfg.anchors_file}" if cfg.anchors_file else "from its parameters"
        c.problem(
            field,
            f"{len(boxes[1])} anchors (output {boxes[0]!r} has {len(boxes[1])} boxes)",
            f"{len(anchors)} {source}",
        )
    return c.problems


def check_detections(
    cfg: DetectionsDecoder | TflitePostprocessDecoder,
    manifest: Manifest,
    outputs: Outputs,
    _dir: Path | None,
) -> list[Problem]:
    """Boxes (K, 4), classes (K,), scores (K,) and a count, as ``detections_decoder`` reads."""
    c = _Checker(manifest, outputs)
    out = cfg.outputs
    boxes = c.output("decoder.outputs.boxes", out.boxes, 2, "(1, K, 4)")
    classes = c.output("decoder.outputs.classes", out.classes, 1, "(1, K)")
    scores = c.output("decoder.outputs.scores", out.scores, 1, "(1, K)")
    count = None
    if out.count is not None and out.count not in outputs:
        c.problem(
            "decoder.outputs.count",
            f"one of the model's outputs {sorted(outputs)}",
            repr(out.count),
        )
    elif out.count is not None:
        held = np.asarray(outputs[out.count])
        if held.size == 1:
            count = int(held.ravel()[0])
        else:
            c.problem(
                "decoder.outputs.count",
                f"output {out.count!r} holding one number (the detection count)",
                f"shape {held.shape}",
            )
    if boxes is not None and boxes[1].shape[1] != 4:
        c.problem(
            "decoder.outputs.boxes",
            f"output {boxes[0]!r} shaped (1, K, 4)",
            f"shape {c.shape(boxes[0])}",
        )
    if scores is None:
        return c.problems
    s_name, s = scores
    if not _in_unit_range(s):
        c.problem("decoder.outputs.scores", f"scores in [0, 1] from {s_name!r}", _range(s))
    for field, found in (("decoder.outputs.boxes", boxes), ("decoder.outputs.classes", classes)):
        if found is not None and len(found[1]) != len(s):
            c.problem(
                field,
                f"one row per score ({len(s)}, as output {s_name!r} has)",
                f"output {found[0]!r} with {len(found[1])} rows",
            )
    if classes is not None:
        valid = len(s) if count is None else min(count, len(s))
        cls = classes[1][:valid].astype(np.int64) + cfg.class_offset
        if len(cls) and cls.min() < 0:
            c.problem(
                "decoder.class_offset",
                f"an offset that makes class {int(cls.min()) - cfg.class_offset} of output "
                f"{classes[0]!r} a label index (>= 0)",
                str(cfg.class_offset),
            )
        if len(cls) and cls.max() >= c.n_labels:
            c.problem(
                "labels",
                f"at least {int(cls.max()) + 1} labels (output {classes[0]!r} gives class "
                f"{int(cls.max()) - cfg.class_offset}, class_offset {cfg.class_offset})",
                str(c.n_labels),
            )
    return c.problems


def check_yolo_regions(
    cfg: YoloRegionsDecoder, manifest: Manifest, outputs: Outputs, _dir: Path | None
) -> list[Problem]:
    c = _Checker(manifest, outputs)
    found = c.output("decoder.output", cfg.output, 3, "(1, A x (5 + C), H, W)")
    if found is None:
        return c.problems
    name, grid = found
    channels, n_anchors, n_labels = grid.shape[0], len(cfg.anchors), c.n_labels
    if channels == n_anchors * (5 + n_labels):
        return c.problems
    where = f"output {name!r} has {channels} channels = anchors x (5 + labels)"
    if channels % n_anchors == 0 and channels // n_anchors > 5:
        c.problem("labels", f"{channels // n_anchors - 5} labels ({where})", str(n_labels))
    elif channels % (5 + n_labels) == 0:
        c.problem(
            "decoder.anchors", f"{channels // (5 + n_labels)} anchors ({where})", str(n_anchors)
        )
    else:
        c.problem(
            "decoder.output",
            f"{n_anchors * (5 + n_labels)} channels ({n_anchors} anchors x (5 + {n_labels}))",
            f"{channels} in output {name!r}",
        )
    return c.problems


#: Checks the model's outputs against what the decoder of this manifest ``decoder.type`` reads.
Check = Callable[[Any, Manifest, Outputs, Path | None], list[Problem]]

CHECKS: dict[str, Check] = {
    "softmax": check_classifier,
    "sigmoid": check_classifier,
    "ssd_boxes": check_ssd_boxes,
    "ssd_anchors": check_ssd_anchors,
    "tflite_detection_postprocess": check_detections,
    "detections": check_detections,
    "yolo_regions": check_yolo_regions,
}


def check_outputs(
    manifest: Manifest, outputs: Outputs, bundle_dir: Path | None = None
) -> list[Problem]:
    """Every way these model outputs do not fit what the manifest's decoder reads."""
    return CHECKS[manifest.decoder.type](manifest.decoder, manifest, outputs, bundle_dir)
