"""The manifest `inspect-model --manifest` writes: what the file states, "TODO" for the rest.

Nothing is guessed. A field is filled only when the tensors or the file's metadata
(metadata.py) state it, and the report names where it was read; every field a person must
decide is the string ``"TODO"``, listed in the report with what to decide, and refused by
``load_bundle`` until it is replaced (bundle/load.py: ``todo_paths``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bundle.load import TODO
from edge_agent.bundle.manifest import SCHEMA, Thresholds
from edge_agent.fsutil import sha256_file

if TYPE_CHECKING:
    from edge_agent.runtimes.inspect import TensorInfo
    from edge_agent.runtimes.metadata import FileFacts

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
#: Label names that mean "no class": a background score column, or TF label maps' unused ids.
BACKGROUND_NAMES = ("background", "__background__")
#: Report order: fields as the manifest lists them.
FIELD_ORDER = ("task", "labels", "model", "input", "decoder")
DECODER_DOC = "docs/bundle.md#decoders"


@dataclass
class Draft:
    """What the report says about each field: read (and where), TODO (and what to decide)."""

    read: list[str] = field(default_factory=list)
    todos: list[tuple[str, str]] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)

    def fact(self, path: str, value: Any, source: str) -> Any:
        self.read.append(
            f"{path} = {value if not isinstance(value, list) else _short(value)}  ({source})"
        )
        return value

    def todo(self, path: str, what: str) -> str:
        self.todos.append((path, what))
        return TODO


def _short(values: list[Any]) -> str:
    text = ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" for v in values[:4])
    return f"[{text}{', ...' if len(values) > 4 else ''}] ({len(values)})"


def manifest_skeleton(
    path: Path, fmt: str, inputs: list[TensorInfo], outputs: list[TensorInfo], facts: FileFacts
) -> tuple[dict[str, Any], Draft]:
    draft = Draft()
    task, decoder, columns = _decoder(draft, outputs, facts)
    labels = _labels(draft, facts, decoder, columns)
    precision = _precision(inputs, outputs)
    draft.fact("model.precision", precision, "tensor dtypes and quantization")
    thresholds = Thresholds().model_dump(exclude={"per_class"})
    draft.defaults.append(
        f"name = {path.stem!r}, version = 1: from the file name; name the model as you like"
    )
    draft.defaults.append(
        "thresholds = "
        + ", ".join(f"{k} {v}" for k, v in thresholds.items())
        + ": the documented defaults; tune them on your own footage"
    )
    spec = _input_spec(draft, inputs[0], facts)
    draft.read.sort(key=lambda line: _rank(line.split(" ", 1)[0]))
    draft.todos.sort(key=lambda todo: _rank(todo[0]))
    return {
        "schema": SCHEMA,
        "name": path.stem,
        "version": 1,
        "task": task,
        "labels": labels,
        "model": {"file": path.name, "format": fmt, "precision": precision},
        "input": spec,
        "decoder": decoder,
        "thresholds": thresholds,
        "files": {path.name: sha256_file(path)},
    }, draft


def _rank(path: str) -> int:
    top = path.split(".", 1)[0]
    return FIELD_ORDER.index(top) if top in FIELD_ORDER else len(FIELD_ORDER)


def _precision(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> str:
    if inputs[0].dtype == "uint8" and inputs[0].quantization:
        return "uint8"
    if any(t.quantization for t in inputs + outputs):
        return "int8"
    return "fp16" if any(t.dtype == "float16" for t in inputs + outputs) else "fp32"


def _input_spec(draft: Draft, tensor: TensorInfo, facts: FileFacts) -> dict[str, Any]:
    where = f"input {tensor.name} {tensor.shape}"
    dims = [d if isinstance(d, int) and d > 0 else None for d in tensor.shape]
    spec: dict[str, Any] = {"name": draft.fact("input.name", tensor.name, "the first input")}
    if len(dims) == 4 and (dims[1] == 3) != (dims[3] == 3):
        nchw = dims[1] == 3
        layout, (h, w) = ("NCHW", dims[2:4]) if nchw else ("NHWC", dims[1:3])
        spec["layout"] = draft.fact("input.layout", layout, where)
        for key, size in (("width", w), ("height", h)):
            spec[key] = (
                draft.fact(f"input.{key}", size, where)
                if size
                else draft.todo(
                    f"input.{key}", "the input size in pixels (the tensor's is dynamic)"
                )
            )
    else:
        what = "NCHW or NHWC: which axis holds the 3 colour channels"
        spec["layout"] = draft.todo("input.layout", f"{what} ({where})")
        spec["width"] = draft.todo("input.width", "the input width in pixels")
        spec["height"] = draft.todo("input.height", "the input height in pixels")
    spec["dtype"] = draft.fact("input.dtype", tensor.dtype, where)
    spec["color"] = _from_facts(
        draft, facts, "input.color", "RGB or BGR: the channel order the model was trained on"
    )
    if tensor.dtype == "float32":
        for key, what in (
            ("scale", "pixel multiplier before mean/std: 1/255 for [0, 1] inputs, 1 for 0-255"),
            ("mean", "per-channel mean subtracted after scale, in color order"),
            ("std", "per-channel std divided by after the mean, in color order"),
        ):
            spec[key] = _from_facts(draft, facts, f"input.{key}", what)
    elif tensor.quantization:
        scale, zero = tensor.quantization
        low = (0 if tensor.dtype == "uint8" else -128) - zero
        draft.read.append(
            f"input.dtype {tensor.dtype}: raw pixels go in as they are (no scale/mean/std), which "
            f"the model reads as [{low * scale:.4g}, {(low + 255) * scale:.4g}] "
            "(its quantization); if it was trained on another range, set dtype float32 with "
            "scale/mean/std instead"
        )
    spec["resize"] = draft.todo(
        "input.resize", "how frames become the input size: stretch, letterbox or crop"
    )
    return spec


def _from_facts(draft: Draft, facts: FileFacts, path: str, what: str) -> Any:
    fact = facts.facts.get(path)
    if fact is None:
        return draft.todo(path, what)
    return draft.fact(path, fact.value, fact.source)


def _decoder(
    draft: Draft, outputs: list[TensorInfo], facts: FileFacts
) -> tuple[str, dict[str, Any], int | None]:
    """(task, decoder, number of score columns when the decoder reads one per class)."""
    names = [o.name for o in outputs]
    listed = ", ".join(f"{o.name} {o.shape}" for o in outputs)
    if len(outputs) == 4 and (
        any(POSTPROCESS_OP in n for n in names) or POSTPROCESS_OP in facts.custom_ops
    ):
        return "detect", _postprocess(draft, outputs), None
    if len(outputs) == 1 and len(outputs[0].shape) == 2:
        out = outputs[0]
        draft.fact("task", "classify", f"one output {out.name} {out.shape}")
        decoder = {
            "type": draft.todo(
                "decoder.type",
                "softmax (one label per image) or sigmoid (independent labels; also set "
                f"multilabel: true) ({DECODER_DOC})",
            ),
            "output": draft.fact("decoder.output", out.name, "the only output"),
            "from_logits": draft.todo(
                "decoder.from_logits",
                "true if the output is raw logits, false if the graph already applies "
                "softmax/sigmoid",
            ),
        }
        return "classify", decoder, out.shape[-1] if isinstance(out.shape[-1], int) else None
    boxes = [o for o in outputs if len(o.shape) == 3 and o.shape[-1] == 4]
    scores = [o for o in outputs if len(o.shape) == 3 and o not in boxes]
    if len(outputs) == 2 and len(boxes) == 1 and len(scores) == 1:
        return "detect", _ssd(draft, boxes[0], scores[0]), _columns(scores[0])
    hint = " (one 4-D output: yolo_regions names it in output)" if len(outputs) == 1 else ""
    decoder = {
        "type": draft.todo(
            "decoder.type", f"the decoder for outputs {listed}{hint} ({DECODER_DOC})"
        ),
        "outputs": draft.todo("decoder.outputs", f"which output is which, by name: {names}"),
    }
    return draft.todo("task", "classify or detect"), decoder, None


def _columns(tensor: TensorInfo) -> int | None:
    return tensor.shape[-1] if isinstance(tensor.shape[-1], int) else None


def _postprocess(draft: Draft, outputs: list[TensorInfo]) -> dict[str, Any]:
    draft.fact("task", "detect", f"the {POSTPROCESS_OP} op")
    decoder: dict[str, Any] = {
        "type": draft.fact(
            "decoder.type", "tflite_detection_postprocess", f"the {POSTPROCESS_OP} op"
        )
    }
    names = sorted(o.name for o in outputs)
    keys = ("boxes", "classes", "scores", "count")
    if all(POSTPROCESS_OP in n for n in names):  # op, op:1, op:2, op:3 in the op's output order
        decoder["outputs"] = {
            k: draft.fact(f"decoder.outputs.{k}", n, "the op's output order")
            for k, n in zip(keys, names, strict=True)
        }
        return decoder
    by_shape: dict[str, Any] = {}
    for o in outputs:  # signature names (Model Maker): tell them apart by shape where possible
        key = "boxes" if o.shape[-1:] == [4] else "count" if len(o.shape) == 1 else None
        if key:
            by_shape[key] = draft.fact(f"decoder.outputs.{key}", o.name, f"shape {o.shape}")
    two = [o.name for o in outputs if o.name not in by_shape.values()]
    for key in ("classes", "scores"):
        by_shape[key] = draft.todo(
            f"decoder.outputs.{key}",
            f"which of {two} holds {key} (same shape; Model Maker orders scores, boxes, count, "
            "classes)",
        )
    decoder["outputs"] = {k: by_shape.get(k, TODO) for k in keys}
    return decoder


def _ssd(draft: Draft, boxes: TensorInfo, scores: TensorInfo) -> dict[str, Any]:
    draft.fact("task", "detect", f"outputs {boxes.name} {boxes.shape} and {scores.name}")
    outputs = {
        "boxes": draft.fact("decoder.outputs.boxes", boxes.name, f"shape {boxes.shape}"),
        "scores": draft.fact("decoder.outputs.scores", scores.name, f"shape {scores.shape}"),
    }
    return {
        "type": draft.todo(
            "decoder.type",
            "ssd_boxes if boxes are decoded boxes (keep box_format, normalized; delete "
            "anchor_generator, box_coder), ssd_anchors if raw box encodings (keep "
            "anchor_generator or replace it with anchors_file, box_coder; delete box_format, "
            f"normalized) ({DECODER_DOC})",
        ),
        "outputs": outputs,
        "box_format": draft.todo("decoder.box_format", "ssd_boxes: xyxy, yxyx, xywh or cxcywh"),
        "normalized": draft.todo(
            "decoder.normalized", "ssd_boxes: true if boxes are in [0, 1], false if in pixels"
        ),
        "anchor_generator": draft.todo(
            "decoder.anchor_generator",
            "ssd_anchors: the anchor generator of the model's training config, or anchors_file",
        ),
        "box_coder": {
            "order": draft.todo(
                "decoder.box_coder.order", "ssd_anchors: xywh (torchvision) or yxhw (TensorFlow)"
            ),
            "weights": draft.todo(
                "decoder.box_coder.weights",
                "ssd_anchors: the box coder's scale factors, in order (usually 10, 10, 5, 5)",
            ),
        },
        "score_activation": draft.todo(
            "decoder.score_activation",
            "none if scores are probabilities, sigmoid or softmax if they are logits",
        ),
    }


def _labels(
    draft: Draft, facts: FileFacts, decoder: dict[str, Any], columns: int | None
) -> list[str] | str:
    """Labels only as the file lists them; a background column is never counted as one."""
    fact = facts.facts.get("labels")
    ssd = "score_activation" in decoder  # the decoders with a background_class
    postprocess = decoder.get("type") == "tflite_detection_postprocess"
    labels = list(fact.value) if fact else []
    background: int | None = None
    if ssd and labels and labels[0].lower() in BACKGROUND_NAMES and len(labels) == columns:
        labels, background = labels[1:], 0
    problem = None
    if fact and len(set(labels)) != len(labels):
        problem = f"{fact.source} names some classes more than once; labels must be unique"
    elif fact and columns is not None and len(labels) not in (columns, columns - 1):
        problem = f"{fact.source} lists {len(labels)} names but the scores have {columns} columns"
    elif fact and columns is not None and len(labels) == columns - 1 and not ssd:
        problem = f"{fact.source} lists {columns - 1} names for {columns} score columns"
    if fact and problem is None:
        draft.fact("labels", labels, fact.source)
        if ssd and background is not None:
            decoder["background_class"] = draft.fact(
                "decoder.background_class", 0, f"{fact.source} names column 0 background"
            )
        elif ssd and len(labels) == columns:
            decoder["background_class"] = draft.fact(
                "decoder.background_class", None, f"{columns} score columns, {columns} labels"
            )
        elif ssd:
            decoder["background_class"] = draft.todo(
                "decoder.background_class",
                f"the index of the background column: scores have {columns} columns for "
                f"{len(labels)} labels (usually 0)",
            )
        if postprocess:
            _class_offset(draft, facts, decoder, labels)
        return labels
    count = f"{columns} class names in score-column order" if columns else "the class names"
    if ssd:
        count += f", or {columns - 1} if one column is background" if columns else ""
        decoder["background_class"] = draft.todo(
            "decoder.background_class",
            "the index of the background score column (not a label), or null if none",
        )
    if postprocess:
        decoder["class_offset"] = draft.todo(
            "decoder.class_offset", "what to add to the op's class index to index labels"
        )
    what = f"{count}"
    return draft.todo("labels", f"{problem}: {what}" if problem else what)


def _class_offset(
    draft: Draft, facts: FileFacts, decoder: dict[str, Any], labels: list[str]
) -> None:
    if facts.labels_kind == "value" and labels[0] != "???":
        decoder["class_offset"] = draft.fact(
            "decoder.class_offset", 0, "the label file maps class values to lines"
        )
    else:
        decoder["class_offset"] = draft.todo(
            "decoder.class_offset",
            "what to add to the op's class index to index labels (1 if labels start with a "
            "placeholder such as '???')",
        )
