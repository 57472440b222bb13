"""Image size from the file header, so loading 10 000 images does not decode 10 000 images.

JPEG, PNG, BMP and GIF are parsed here; anything else (WebP, TIFF, ...) falls back to a full
OpenCV decode. The size reported is the one ``cv2.imread`` returns: OpenCV applies the JPEG EXIF
orientation, so orientations 5-8 (rotated by 90 degrees) swap width and height here too.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import cv2

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Bytes read from the head of a file; the JPEG SOF marker is usually within the first few KiB,
#: but EXIF thumbnails can push it further, so the JPEG parser seeks instead of relying on this.
HEAD_BYTES = 64
#: JPEG start-of-frame markers (baseline, progressive, lossless...); C4, C8 and CC are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: EXIF orientations that rotate by 90 or 270 degrees (TIFF 6.0 tag 0x0112).
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})


class UnreadableImageError(ValueError):
    """The file exists but is not an image OpenCV can read."""


def is_image(path: Path) -> bool:
    """True for files whose suffix is one of the image types we load."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_size(path: Path) -> tuple[int, int]:
    """(width, height) as cv2.imread would return it; FileNotFoundError or UnreadableImageError."""
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
        size: tuple[int, int] | None = None
        if head[:2] == b"\xff\xd8":
            fh.seek(2)
            size = _jpeg_size(fh)
        elif head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            size = struct.unpack(">II", head[16:24])
        elif head[:2] == b"BM" and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            size = (width, abs(height))
        elif head[:4] == b"GIF8" and len(head) >= 10:
            size = struct.unpack("<HH", head[6:10])
    if size is not None and size[0] > 0 and size[1] > 0:
        return int(size[0]), int(size[1])
    return decoded_size(path)


def decoded_size(path: Path) -> tuple[int, int]:
    """(width, height) by decoding the whole file: slow, but the ground truth."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UnreadableImageError(f"{path}: not an image OpenCV can decode")
    return int(image.shape[1]), int(image.shape[0])


def _jpeg_size(fh: BinaryIO) -> tuple[int, int] | None:
    """Walk JPEG segments up to the first SOF marker; None when the stream is malformed."""
    rotated = False
    while True:
        byte = fh.read(1)
        if byte != b"\xff":
            return None
        while byte == b"\xff":  # fill bytes before a marker code
            byte = fh.read(1)
        if not byte:
            return None
        marker = byte[0]
        raw_len = fh.read(2)
        if len(raw_len) < 2:
            return None
        seg_len = struct.unpack(">H", raw_len)[0]
        if seg_len < 2:
            return None
        if marker in _SOF_MARKERS:
            data = fh.read(5)
            if len(data) < 5:
                return None
            height, width = struct.unpack(">HH", data[1:5])
            return (height, width) if rotated else (width, height)
        body = fh.read(seg_len - 2)
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            rotated = _exif_orientation(body[6:]) in _ROTATED_ORIENTATIONS


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag of the first IFD in a TIFF-structured EXIF block, 1 when absent."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            break
        tag, _typ, _n, value = struct.unpack(order + "HHIH", tiff[entry : entry + 10])
        if tag == 0x0112:
            return int(value)
    return 1
