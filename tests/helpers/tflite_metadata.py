"""TFLite model metadata written the way tflite-support's MetadataPopulator writes it.

A ``ModelMetadata`` flatbuffer (tensorflow/tflite-support metadata_schema.fbs, identifier
``M001``) goes into a new model buffer named by a ``TFLITE_METADATA`` metadata entry, and the
associated files are packed into a zip archive appended to the .tflite file. Built with the
flatbuffers package and ai-edge-litert's generated TFLite schema, so tests need nothing else.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import flatbuffers
import numpy as np

AXIS_LABELS, VALUE_LABELS = 2, 3  # AssociatedFileType


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(value)
    return b.EndVector()


def model_metadata(
    label_file: str | None,
    label_kind: int = AXIS_LABELS,
    label_output: int = 0,
    outputs: int = 1,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    rgb: bool = False,
) -> bytes:
    """A ModelMetadata flatbuffer for a one-input model with ``outputs`` outputs."""
    b = flatbuffers.Builder(1024)
    output_metadata = []
    for index in range(outputs):
        files = None
        if label_file is not None and index == label_output:
            name = b.CreateString(label_file)
            b.StartObject(4)  # AssociatedFile: name, description, type, locale
            b.PrependUOffsetTRelativeSlot(0, name, 0)
            b.PrependInt8Slot(2, label_kind, 0)
            files = _vector(b, [b.EndObject()])
        tensor_name = b.CreateString(f"output{index}")
        b.StartObject(7)  # TensorMetadata
        b.PrependUOffsetTRelativeSlot(0, tensor_name, 0)
        if files is not None:
            b.PrependUOffsetTRelativeSlot(6, files, 0)
        output_metadata.append(b.EndObject())
    content = units = None
    if rgb:
        b.StartObject(2)  # ImageProperties: color_space, default_size
        b.PrependInt8Slot(0, 1, 0)
        image = b.EndObject()
        b.StartObject(3)  # Content: content_properties_type, content_properties, range
        b.PrependUint8Slot(0, 2, 0)
        b.PrependUOffsetTRelativeSlot(1, image, 0)
        content = b.EndObject()
    if mean is not None and std is not None:
        mean_vec, std_vec = _floats(b, mean), _floats(b, std)
        b.StartObject(2)  # NormalizationOptions
        b.PrependUOffsetTRelativeSlot(0, mean_vec, 0)
        b.PrependUOffsetTRelativeSlot(1, std_vec, 0)
        options = b.EndObject()
        b.StartObject(2)  # ProcessUnit: options_type, options
        b.PrependUint8Slot(0, 1, 0)
        b.PrependUOffsetTRelativeSlot(1, options, 0)
        units = _vector(b, [b.EndObject()])
    b.StartObject(7)  # input TensorMetadata
    if content is not None:
        b.PrependUOffsetTRelativeSlot(3, content, 0)
    if units is not None:
        b.PrependUOffsetTRelativeSlot(4, units, 0)
    inputs = _vector(b, [b.EndObject()])
    outputs_vec = _vector(b, output_metadata)
    b.StartObject(9)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs_vec, 0)
    subgraphs = _vector(b, [b.EndObject()])
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    b.Finish(b.EndObject(), file_identifier=b"M001")
    return bytes(b.Output())


def with_metadata(src: Path, dst: Path, metadata: bytes, files: dict[str, str]) -> Path:
    """Copy ``src`` to ``dst`` with ``metadata`` populated and ``files`` zipped on the end."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "TFLITE_METADATA"
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    if files:
        with zipfile.ZipFile(dst, "a") as archive:  # appended after the flatbuffer
            for name, text in files.items():
                archive.writestr(name, text)
    return dst
