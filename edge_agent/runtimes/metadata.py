"""What a model file states about itself beyond its tensors: labels, colour order, normalisation.

``inspect-model`` fills a manifest field only from these facts (each kept with where it was
read), never from a guess. Two sources:

* ONNX ``metadata_props`` (key/value strings): Ultralytics' ``names`` (a Python dict literal),
  ``labels`` / ``classes`` / ``class_names`` lists, and the Windows ML image keys Custom Vision
  exports write (``Image.BitmapPixelFormat``, ``Image.NominalPixelRange``). Our trainer writes
  none: its bundles carry their own manifest.
* TFLite model metadata (tensorflow/tflite-support metadata_schema.fbs, file identifier
  ``M001``): a flatbuffer in one of the model's buffers, named ``TFLITE_METADATA``, whose
  associated label files (``TENSOR_AXIS_LABELS``, ``TENSOR_VALUE_LABELS``) are packed in a zip
  archive appended to the .tflite file. Read here with a small bounds-checked flatbuffer reader,
  so inspecting needs neither tflite-support nor the flatbuffers package.
"""

from __future__ import annotations

import ast
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: A label file larger than this is not a label file (COCO's is 1 KB; ImageNet-21k's ~300 KB).
MAX_LABEL_FILE_BYTES = 4 * 1024 * 1024
#: metadata_props values longer than this are not read as label lists (ImageNet-21k names fit).
MAX_LABEL_PROP_CHARS = 1_000_000
T = TypeVar("T")
#: ONNX metadata_props keys that hold class names, in the order they are tried.
ONNX_LABEL_KEYS = ("names", "labels", "classes", "class_names")
#: Windows ML image metadata (Custom Vision ONNX exports): channel order and pixel range.
ONNX_COLOR_KEY = "Image.BitmapPixelFormat"
ONNX_RANGE_KEY = "Image.NominalPixelRange"
ONNX_COLORS = {"Bgr8": "BGR", "Rgb8": "RGB"}
#: The float input range each Image.NominalPixelRange names (onnx/docs/MetadataProps.md).
ONNX_PIXEL_RANGES: dict[str, tuple[float, float]] = {
    "NominalRange_0_255": (0.0, 255.0),
    "Normalized_0_1": (0.0, 1.0),
    "Normalized_1_1": (-1.0, 1.0),
    "NominalRange_16_235": (16.0, 235.0),
}
# tensor = (pixel * scale - mean) / std for each named range a 0-255 pixel can be mapped to
ONNX_RANGES: dict[str, tuple[float, float, float]] = {
    "NominalRange_0_255": (1.0, 0.0, 1.0),
    "Normalized_0_1": (1 / 255, 0.0, 1.0),
    "Normalized_1_1": (1 / 255, 0.5, 0.5),
}

TFLITE_METADATA_NAME = "TFLITE_METADATA"
AXIS_LABELS, VALUE_LABELS = 2, 3  # AssociatedFileType
IMAGE_PROPERTIES, NORMALIZATION_OPTIONS = 2, 1  # union member ids
COLOR_SPACES = {1: "RGB"}  # ColorSpaceType; 2 (GRAYSCALE) has no manifest equivalent


@dataclass(frozen=True)
class Fact:
    value: Any
    source: str  # where in the file it was read, for the report


@dataclass
class FileFacts:
    """Manifest paths (``labels``, ``input.color``, ...) to what the file states for them."""

    facts: dict[str, Fact] = field(default_factory=dict)
    #: "axis": one label per score column; "value": class values index the labels
    labels_kind: str = "axis"
    notes: list[str] = field(default_factory=list)  # read but not usable, with why
    custom_ops: list[str] = field(default_factory=list)  # TFLite custom operators


def parse_label_list(text: str) -> list[str] | None:
    """Class names from a metadata string: a JSON or Python list, or a dict {0: name, ...}."""
    if len(text) > MAX_LABEL_PROP_CHARS:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)  # Ultralytics writes str(dict): single quotes
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if isinstance(value, dict):
        try:
            index = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        if sorted(index) != list(range(len(index))):
            return None
        value = [index[i] for i in range(len(index))]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    return None


def metadata_value(metadata: Mapping[str, str], key: str) -> str | None:
    """The value of ``key`` as the file spells it; ONNX metadata keys are case-insensitive."""
    return next((v for k, v in metadata.items() if k.lower() == key.lower()), None)


def lookup(table: Mapping[str, T], name: str) -> T | None:
    """A table entry by a case-insensitive name (files spell ``Bgr8`` or ``BGR8``)."""
    return next((v for k, v in table.items() if k.lower() == name.lower()), None)


def onnx_facts(props: dict[str, str]) -> FileFacts:
    found = FileFacts()
    for key in ONNX_LABEL_KEYS:
        if key in props:
            labels = parse_label_list(props[key])
            if labels is None:
                found.notes.append(f"metadata_props[{key!r}] is not a list of class names")
            else:
                found.facts["labels"] = Fact(labels, f"metadata_props[{key!r}]")
                break
    color = metadata_value(props, ONNX_COLOR_KEY)
    order = lookup(ONNX_COLORS, color) if color is not None else None
    if order is not None:
        found.facts["input.color"] = Fact(order, f"{ONNX_COLOR_KEY}={color}")
    elif color is not None:
        found.notes.append(f"{ONNX_COLOR_KEY}={color}: not an RGB or BGR input")
    pixel_range = metadata_value(props, ONNX_RANGE_KEY)
    normalisation = lookup(ONNX_RANGES, pixel_range) if pixel_range is not None else None
    if normalisation is not None:
        scale, mean, std = normalisation
        where = f"{ONNX_RANGE_KEY}={pixel_range}"
        found.facts["input.scale"] = Fact(scale, where)
        found.facts["input.mean"] = Fact([mean] * 3, where)
        found.facts["input.std"] = Fact([std] * 3, where)
    elif pixel_range is not None:
        found.notes.append(f"{ONNX_RANGE_KEY}={pixel_range}: no scale/mean/std gives that range")
    return found


class _Table:
    """One flatbuffer table: ``buf[pos]`` holds the offset back to its vtable."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - _unpack(buf, "<i", pos)
        self.vsize = _unpack(buf, "<H", self.vtable)

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry >= self.vsize:
            return None
        offset = _unpack(self.buf, "<H", self.vtable + entry)
        return self.pos + offset if offset else None

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        at = self._field(slot)
        return default if at is None else int(_unpack(self.buf, fmt, at))

    def _target(self, slot: int) -> int | None:
        at = self._field(slot)
        return None if at is None else at + _unpack(self.buf, "<I", at)

    def table(self, slot: int) -> _Table | None:
        at = self._target(slot)
        return None if at is None else _Table(self.buf, at)

    def string(self, slot: int) -> str | None:
        at = self._target(slot)
        if at is None:
            return None
        n = _unpack(self.buf, "<I", at)
        return _slice(self.buf, at + 4, n).decode("utf-8", "replace")

    def tables(self, slot: int) -> list[_Table]:
        at = self._target(slot)
        if at is None:
            return []
        items = [at + 4 + 4 * i for i in range(_unpack(self.buf, "<I", at))]
        return [_Table(self.buf, p + _unpack(self.buf, "<I", p)) for p in items]

    def data(self, slot: int, item: str = "B") -> tuple[Any, ...]:
        at = self._target(slot)
        if at is None:
            return ()
        n = _unpack(self.buf, "<I", at)
        size = struct.calcsize(item)
        return struct.unpack(f"<{n}{item}", _slice(self.buf, at + 4, n * size))


def _unpack(buf: bytes, fmt: str, at: int) -> int:
    if at < 0 or at + struct.calcsize(fmt) > len(buf):
        raise ValueError(f"offset {at} outside the {len(buf)}-byte flatbuffer")
    return int(struct.unpack_from(fmt, buf, at)[0])


def _slice(buf: bytes, at: int, n: int) -> bytes:
    if at < 0 or at + n > len(buf):
        raise ValueError(f"{n} bytes at {at} outside the {len(buf)}-byte flatbuffer")
    return buf[at : at + n]


def _root(buf: bytes) -> _Table:
    return _Table(buf, _unpack(buf, "<I", 0))


def tflite_facts(path: Path) -> FileFacts:
    """Facts from a .tflite file's metadata; a file without metadata gives none."""
    found = FileFacts()
    buf = path.read_bytes()
    try:
        model = _root(buf)  # tflite schema.fbs Model
        # OperatorCode.custom_code (slot 1)
        found.custom_ops = [c for op in model.tables(1) if (c := op.string(1))]
        meta = _metadata_buffer(model)
        if meta is None:
            return found
        if meta[4:8] != b"M001":
            found.notes.append("TFLITE_METADATA is not a metadata_schema M001 flatbuffer")
            return found
        _read_model_metadata(_root(meta), path, found)
    except (ValueError, struct.error) as exc:
        found.notes.append(f"model metadata is unreadable ({exc}); nothing taken from it")
    return found


def _metadata_buffer(model: _Table) -> bytes | None:
    buffers = model.tables(4)  # Model.buffers
    for entry in model.tables(6):  # Model.metadata: name (0), buffer index (1)
        if entry.string(0) != TFLITE_METADATA_NAME:
            continue
        index = entry.scalar(1, "<I")
        if index >= len(buffers):
            raise ValueError(f"metadata names buffer {index} of {len(buffers)}")
        buffer = buffers[index]
        offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
        if offset > 1:  # large models keep buffers after the flatbuffer (schema.fbs Buffer)
            return _slice(model.buf, offset, size)
        return bytes(buffer.data(0))
    return None


def _read_model_metadata(meta: _Table, path: Path, found: FileFacts) -> None:
    subgraphs = meta.tables(3)  # ModelMetadata.subgraph_metadata
    if not subgraphs:
        return
    graph = subgraphs[0]
    inputs = graph.tables(2)
    if inputs:
        _read_image_input(inputs[0], found)
    for index, tensor in enumerate(graph.tables(3)):  # output_tensor_metadata
        for file in tensor.tables(6):  # associated_files: name (0), type (2)
            kind = file.scalar(2, "<b")
            name = file.string(0)
            if kind not in (AXIS_LABELS, VALUE_LABELS) or not name:
                continue
            labels = _zip_labels(path, name, found)
            if labels is not None:
                where = f"label file {name} of output {index} ({tensor.string(0) or 'unnamed'})"
                found.facts["labels"] = Fact(labels, where)
                found.labels_kind = "axis" if kind == AXIS_LABELS else "value"
                return


def _read_image_input(tensor: _Table, found: FileFacts) -> None:
    content = tensor.table(3)  # TensorMetadata.content
    if content is not None and content.scalar(0, "<B") == IMAGE_PROPERTIES:
        props = content.table(1)
        space = props.scalar(0, "<b") if props is not None else 0
        if space in COLOR_SPACES:
            found.facts["input.color"] = Fact(COLOR_SPACES[space], "input ImageProperties")
        elif space:
            found.notes.append(f"input color_space {space} is neither RGB nor BGR")
    for unit in tensor.tables(4):  # process_units: options_type (0), options (1)
        options = unit.table(1)
        if unit.scalar(0, "<B") != NORMALIZATION_OPTIONS or options is None:
            continue
        mean, std = options.data(0, "f"), options.data(1, "f")
        if len(mean) in (1, 3) and len(std) in (1, 3) and all(std):
            where = "input NormalizationOptions"
            found.facts["input.scale"] = Fact(1.0, where)  # they apply to 0-255 pixels
            found.facts["input.mean"] = Fact([float(m) for m in mean] * (3 // len(mean)), where)
            found.facts["input.std"] = Fact([float(s) for s in std] * (3 // len(std)), where)
        return


def _zip_labels(path: Path, name: str, found: FileFacts) -> list[str] | None:
    """One label per line from the zip the metadata populator appends to the model file."""
    import zipfile  # inspect-model only: the agent checks inputs with this module's constants

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(name)
            if info.file_size > MAX_LABEL_FILE_BYTES:
                found.notes.append(f"label file {name} is {info.file_size} bytes: not read")
                return None
            with archive.open(info) as member:  # read bounded: file_size may lie
                raw = member.read(MAX_LABEL_FILE_BYTES + 1)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        found.notes.append(f"metadata names label file {name}, which cannot be read: {exc}")
        return None
    if len(raw) > MAX_LABEL_FILE_BYTES:
        found.notes.append(f"label file {name} is larger than {MAX_LABEL_FILE_BYTES} bytes")
        return None
    lines = raw.decode("utf-8", "replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines] or None
