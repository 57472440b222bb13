"""A picture's capture time, drawn into the picture itself, so a test can tell how old a decoded
frame really is (issue 18: a result's ts may be at most one frame interval after its picture).

The camera draws the wall-clock time (``time.time()`` in whole milliseconds) at which it made
the frame as 60 black/white 16x16 blocks in the top-left 320x48 pixels, 20 a row, 3 rows:

    6 start blocks 1 0 1 1 0 0 | 48 data bits, most significant first | 6 check bits

where check bit ``i`` is the XOR of the data bits ``j`` with ``j % 6 == i``. Big flat blocks of
full black and full white survive H.264 (ultrafast, zerolatency) and JPEG at quality 80; the
reader looks only at the middle 8x8 of each block (block edges ring) and refuses a block that
is neither clearly dark nor clearly bright, a wrong start pattern, or a wrong check bit: then
there is no stamp, never a wrong one.

The RTSP camera's child runs under /usr/bin/python3, which has no numpy: ``draw_stamp_plane``
writes into a plain ``bytearray`` luma plane; ``draw_stamp`` takes a numpy image (MJPEG child)
and ``read_stamp`` reads a decoded BGR frame (tests). numpy is imported only where it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: One block's side in pixels: large enough that 4:2:0 chroma and 8x8 DCTs leave its middle flat.
BLOCK = 16
COLUMNS, ROWS = 20, 3
#: The stamp's area: the smallest picture that can carry it.
STAMP_WIDTH, STAMP_HEIGHT = COLUMNS * BLOCK, ROWS * BLOCK
START = (1, 0, 1, 1, 0, 0)
DATA_BITS = 48
CHECK_BITS = 6
#: A block's middle must be darker than DARK or brighter than BRIGHT (of 255) to count as a bit.
DARK, BRIGHT = 80, 175
WHITE, BLACK = 255, 0


def stamp_bits(t: float) -> list[int]:
    """The 60 block values (1 white, 0 black) that say time ``t`` (seconds since the epoch)."""
    ms = round(t * 1000)
    if not 0 <= ms < 1 << DATA_BITS:
        raise ValueError(f"t must be between 0 and {(1 << DATA_BITS) / 1000:.0f} s, got {t!r}")
    data = [(ms >> (DATA_BITS - 1 - j)) & 1 for j in range(DATA_BITS)]
    check = [0] * CHECK_BITS
    for j, bit in enumerate(data):
        check[j % CHECK_BITS] ^= bit
    return [*START, *data, *check]


def bits_to_time(bits: list[int]) -> float | None:
    """The time the 60 block values say, or None when the start pattern or a check bit is wrong."""
    if len(bits) != COLUMNS * ROWS or tuple(bits[: len(START)]) != START:
        return None
    data = bits[len(START) : len(START) + DATA_BITS]
    check = [0] * CHECK_BITS
    for j, bit in enumerate(data):
        check[j % CHECK_BITS] ^= bit
    if check != bits[len(START) + DATA_BITS :]:
        return None
    ms = 0
    for bit in data:
        ms = ms << 1 | bit
    return ms / 1000


def _blocks() -> list[tuple[int, int]]:
    """Top-left (x, y) of each block, in bit order."""
    return [((i % COLUMNS) * BLOCK, (i // COLUMNS) * BLOCK) for i in range(COLUMNS * ROWS)]


def _check_size(width: int, height: int) -> None:
    if width < STAMP_WIDTH or height < STAMP_HEIGHT:
        raise ValueError(
            f"a stamp needs at least {STAMP_WIDTH}x{STAMP_HEIGHT} pixels, got {width}x{height}"
        )


def draw_stamp_plane(plane: bytearray, width: int, height: int, t: float, stride: int = 0) -> None:
    """Draw time ``t`` into an 8-bit luma (GRAY8 / I420 Y) plane, pure Python: rows of
    ``stride`` bytes (default ``width``)."""
    _check_size(width, height)
    stride = stride or width
    white, black = bytes([WHITE]) * BLOCK, bytes([BLACK]) * BLOCK
    for (x, y), bit in zip(_blocks(), stamp_bits(t), strict=True):
        run = white if bit else black
        for row in range(y, y + BLOCK):
            plane[row * stride + x : row * stride + x + BLOCK] = run


def draw_stamp(image: npt.NDArray[np.uint8], t: float) -> None:
    """Draw time ``t`` into a numpy image, grey (H, W) or BGR (H, W, 3), in place."""
    _check_size(image.shape[1], image.shape[0])
    for (x, y), bit in zip(_blocks(), stamp_bits(t), strict=True):
        image[y : y + BLOCK, x : x + BLOCK] = WHITE if bit else BLACK


def read_stamp(image: npt.NDArray[np.uint8]) -> float | None:
    """The capture time drawn in a decoded frame (BGR or grey), or None if there is no stamp
    (too small, a block neither dark nor bright, a wrong start pattern or check bit)."""
    if image.ndim not in (2, 3) or image.shape[0] < STAMP_HEIGHT or image.shape[1] < STAMP_WIDTH:
        return None
    luma = image.mean(axis=2) if image.ndim == 3 else image.astype(float)
    q = BLOCK // 4
    bits = []
    for x, y in _blocks():
        level = float(luma[y + q : y + BLOCK - q, x + q : x + BLOCK - q].mean())
        if DARK <= level <= BRIGHT:
            return None
        bits.append(int(level > BRIGHT))
    return bits_to_time(bits)
