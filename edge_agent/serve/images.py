"""Image bytes -> BGR array for ``edge-agent serve``, with the size read from the header first.

A 0.9 MB PNG of 30000x30000 pixels took 13.8 s and 5.3 GB to decode (OpenCV's own ceiling is
2^30 pixels), so the width and height are read from the header, the way the decoder OpenCV
picks will read them, and an image above the pixel limit is refused before it is decoded.
Formats whose size is not read here are refused, although OpenCV could decode some of them
(JPEG 2000, AVIF, PNM, PFM, HDR, Sun raster): every accepted format has its size checked first.
The decoded shape is checked again, so a header this module misreads cannot get past the limit
(it can only cost one decode, bounded by OPENCV_IO_MAX_IMAGE_PIXELS; see docs/serve.md).

``cv2.IMREAD_REDUCED_*`` is no answer: it shrinks the result, but PNG, WebP and TIFF are still
decoded at full size first, and the model would see a different image than the client sent.
"""

from __future__ import annotations

import logging
import struct
from http import HTTPStatus
from typing import Any

import cv2
import numpy as np

from edge_agent.serve.errors import RequestError

log = logging.getLogger("edge_agent.serve")

#: Largest image decoded, pixels. 40 MP holds 8K UHD (7680x4320, 33 MP) and the full-resolution
#: photos of most 24-36 MP cameras; a 40 MP BGR frame is 120 MB (a 16-bit RGBA PNG's buffer
#: 320 MB), which a 1-2 GB device survives for a few requests at once. Models look at 320-1280
#: pixels, so nothing above this limit would predict better.
DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = "JPEG, PNG, BMP, GIF, WebP or TIFF"

_PNG = b"\x89PNG\r\n\x1a\n"
_TIFF = {b"II*\0": "<", b"MM\0*": ">"}
_BIGTIFF = (b"II+\0", b"MM\0+")
# JPEG markers (ITU T.81 table B.1): SOFn carry the frame size; these others are skipped by
# their length, as libjpeg does. RSTn and TEM stand alone. Any other marker is refused.
_JPEG_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF}
)
_JPEG_SKIP = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_JPEG_ALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# TIFF tags (TIFF 6.0 section 8): the size, and the tile or strip OpenCV allocates a buffer for.
_WIDTH, _HEIGHT, _ROWS_PER_STRIP, _TILE_WIDTH, _TILE_HEIGHT = 256, 257, 278, 322, 323
_TIFF_TAGS = frozenset({_WIDTH, _HEIGHT, _ROWS_PER_STRIP, _TILE_WIDTH, _TILE_HEIGHT})


class HeaderError(ValueError):
    """The data starts like an image of a known format, but its size cannot be read."""


def header_size(data: bytes) -> tuple[str, int, int, int] | None:
    """(format, width, height, pixels to allocate) from the header; None for an unknown
    format. ``pixels`` is width x height, or a TIFF tile or strip when that is larger."""
    if data.startswith(_PNG):
        return ("PNG", *_png(data))
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG", *_jpeg(data))
    if data.startswith(b"GIF"):
        return ("GIF", *_gif(data))
    if data.startswith(b"BM"):
        return ("BMP", *_bmp(data))
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ("WebP", *_webp(data))
    if data[:4] in _TIFF:
        return ("TIFF", *_tiff(data, _TIFF[data[:4]]))
    if data[:4] in _BIGTIFF:
        raise HeaderError("BigTIFF is not accepted; send a TIFF, PNG or JPEG")
    return None


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple[Any, ...]:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise HeaderError(f"the data ends inside the {what}") from None


def _sized(width: int, height: int) -> tuple[int, int, int]:
    if width <= 0 or height <= 0:
        raise HeaderError(f"the header gives a size of {width}x{height}")
    return width, height, width * height


def _png(data: bytes) -> tuple[int, int, int]:
    _, kind, width, height = _unpack(">I4sII", data, 8, "IHDR chunk")
    if kind != b"IHDR":  # libpng: IHDR must come first
        raise HeaderError(f"the first chunk must be IHDR, but is {kind!r}")
    return _sized(width, height)


def _jpeg(data: bytes) -> tuple[int, int, int]:
    """Walk the markers like libjpeg's read_markers: bytes before a marker and 0xFF fill bytes
    are skipped, segments are skipped by their length, so a thumbnail's SOF inside EXIF (APP1)
    is never taken for the frame's."""
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < len(data) - 1 and data[pos + 1] == 0xFF:
            pos += 1
        if pos < 0 or pos + 1 >= len(data):
            raise HeaderError("the data ends before a frame header (SOF)")
        marker, pos = data[pos + 1], pos + 2
        if marker == 0x00 or marker in _JPEG_ALONE:  # stuffed 0xFF00, RSTn, TEM
            continue
        if marker in _JPEG_SOF:
            height, width = _unpack(">HH", data, pos + 3, "frame header (SOF)")
            return _sized(width, height)  # height 0 (DNL) is refused, as libjpeg does
        if marker not in _JPEG_SKIP:
            raise HeaderError(f"marker 0xFF{marker:02X} comes before the frame header (SOF)")
        (length,) = _unpack(">H", data, pos, f"segment 0xFF{marker:02X}")
        if length < 2:
            raise HeaderError(f"segment 0xFF{marker:02X} has a length of {length}")
        pos += length


def _gif(data: bytes) -> tuple[int, int, int]:
    """OpenCV sizes a GIF by its logical screen and refuses frames that do not fit in it."""
    if data[3:6] not in (b"87a", b"89a"):
        raise HeaderError(f"expected GIF87a or GIF89a, but got {data[:6]!r}")
    return _sized(*_unpack("<HH", data, 6, "logical screen descriptor"))


def _bmp(data: bytes) -> tuple[int, int, int]:
    """As OpenCV's BmpDecoder: a 12-byte OS/2 header has 16-bit sizes, one of 36 bytes or more
    32-bit ones; a negative height means top-down rows."""
    (size,) = _unpack("<I", data, 14, "DIB header")
    if size == 12:
        return _sized(*_unpack("<HH", data, 18, "DIB header"))
    if 36 <= size < 2**31:
        width, height = _unpack("<ii", data, 18, "DIB header")
        return _sized(width, abs(height))
    raise HeaderError(f"unknown DIB header size {size}")


def _webp(data: bytes) -> tuple[int, int, int]:
    """As libwebp's WebPGetFeatures: the VP8X canvas, else the VP8 or VP8L frame size (libwebp
    refuses a still image whose frame differs from the canvas)."""
    (kind,) = _unpack("4s", data, 12, "first chunk")
    if kind == b"VP8X":
        w0, w1, w2, h0, h1, h2 = _unpack("6B", data, 24, "VP8X chunk")
        return _sized(1 + (w0 | w1 << 8 | w2 << 16), 1 + (h0 | h1 << 8 | h2 << 16))
    if kind == b"VP8 ":
        tag, start, width, height = _unpack("<B2x3sHH", data, 20, "VP8 frame header")
        if tag & 1 or start != b"\x9d\x01\x2a":
            raise HeaderError("the VP8 chunk does not start with a key frame")
        return _sized(width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L":
        signature, bits = _unpack("<BI", data, 20, "VP8L header")
        if signature != 0x2F:
            raise HeaderError("the VP8L chunk has no signature 0x2F")
        return _sized((bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1)
    raise HeaderError(f"expected a VP8, VP8L or VP8X chunk, but got {kind!r}")


def _tiff(data: bytes, order: str) -> tuple[int, int, int]:
    """The first directory (the page OpenCV decodes). OpenCV also allocates one tile, or one
    strip of RowsPerStrip rows, which a small image can declare to be huge: it counts too."""
    (ifd,) = _unpack(order + "I", data, 4, "TIFF header")
    (count,) = _unpack(order + "H", data, ifd, "first directory")
    tags: dict[int, int] = {}
    for i in range(count):
        tag, kind, n = _unpack(order + "HHI", data, ifd + 2 + 12 * i, "first directory")
        if tag not in _TIFF_TAGS:
            continue
        if tag in tags:  # libtiff would pick one of the two: refuse rather than guess
            raise HeaderError(f"tag {tag} appears twice in the first directory")
        if kind not in (3, 4) or n != 1:  # SHORT or LONG, one value
            raise HeaderError(f"tag {tag} is not one SHORT or LONG")
        (tags[tag],) = _unpack(order + ("H" if kind == 3 else "I"), data, ifd + 10 + 12 * i, "")
    if _WIDTH not in tags or _HEIGHT not in tags:
        raise HeaderError("the first directory has no ImageWidth or ImageLength")
    width, height, pixels = _sized(tags[_WIDTH], tags[_HEIGHT])
    if _TILE_WIDTH in tags or _TILE_HEIGHT in tags:
        block = (tags.get(_TILE_WIDTH) or width) * (tags.get(_TILE_HEIGHT) or height)
    else:
        rows = tags.get(_ROWS_PER_STRIP, 0)
        block = width * (height if rows in (0, 2**32 - 1) else rows)
    return width, height, max(pixels, block)


def decode_image(data: bytes, max_pixels: int, source: str = "") -> np.ndarray:
    """Encoded image bytes -> BGR uint8 (EXIF orientation applied, like the container).

    ``source`` names a URL the bytes came from: then no byte of ``data`` is echoed in an error
    (the client must not read a remote file through our error messages). An upload's first
    bytes are echoed, since they are the client's own.
    """
    origin = f"the file at {source}" if source else "the image"
    too_big_status = HTTPStatus.BAD_REQUEST if source else HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    if not data:
        raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequestImageSizeBytes", f"{origin} is empty")
    not_an_image = f"cannot decode {origin} ({len(data)} bytes): expected {FORMATS}"
    if not source:
        not_an_image += f", but the data starts with {data[:12]!r}"
    try:
        found = header_size(data)
    except HeaderError as exc:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "BadRequestImageFormat", f"{not_an_image}: {exc}"
        ) from exc
    if found is None:
        raise RequestError(HTTPStatus.BAD_REQUEST, "BadRequestImageFormat", not_an_image)
    fmt, width, height, pixels = found
    if pixels > max_pixels:
        size = f"{width}x{height} = {pixels} pixels"
        if pixels != width * height:
            size = f"{width}x{height} with tiles or strips of {pixels} pixels"
        raise RequestError(
            too_big_status,
            "BadRequestImageDimensions",
            f"{origin} is a {fmt} of {size}, more than the {max_pixels} pixels this server "
            "decodes (--max-pixels); nothing was decoded",
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # most codecs return None on bad data, a few assert
        image = None
    if image is None:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "BadRequestImageFormat", f"{not_an_image}: the {fmt} is broken"
        )
    decoded = image.shape[0] * image.shape[1]
    if decoded > max_pixels:  # the header lied to this module; the decoder knew better
        log.warning("a %s said %dx%d but decoded to %s", fmt, width, height, image.shape[:2])
        raise RequestError(
            too_big_status,
            "BadRequestImageDimensions",
            f"{origin} decoded to {image.shape[1]}x{image.shape[0]} = {decoded} pixels, more "
            f"than the {max_pixels} pixels this server accepts (--max-pixels), although its "
            f"header said {width}x{height}",
        )
    return image
