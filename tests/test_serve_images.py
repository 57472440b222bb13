"""serve/images.py: the size comes from the header, as OpenCV's decoder reads it, and an image
above the pixel limit is refused before anything is decoded."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.predictor import Predictor
from edge_agent.serve import PredictionServer, make_server
from edge_agent.serve import images as images_module
from edge_agent.serve.errors import RequestError
from edge_agent.serve.images import HeaderError, decode_image, header_size
from tests.helpers.http import blank_png, call, encode, red_block_frame, running, toy_detector

SMALL = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts cv2.imdecode calls, and fails any: these tests must refuse before decoding."""
    calls: list[int] = []

    def refuse(buf: np.ndarray, flags: int) -> np.ndarray:
        calls.append(len(buf))
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(images_module.cv2, "imdecode", refuse)
    return calls


def refused(data: bytes, max_pixels: int = 1000, source: str = "") -> RequestError:
    with pytest.raises(RequestError) as info:
        decode_image(data, max_pixels, source)
    return info.value


# --- reading the size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "params", "fmt"),
    [
        (".png", [], "PNG"),
        (".jpg", [], "JPEG"),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "JPEG"),
        (".bmp", [], "BMP"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 50], "WebP"),  # lossy: VP8
        (".webp", [], "WebP"),  # lossless: VP8L
        (".tiff", [], "TIFF"),
        (".gif", [], "GIF"),
    ],
)
def test_header_size_matches_the_decoded_size(ext, params, fmt):
    data = cv2.imencode(ext, SMALL, params)[1].tobytes()
    assert header_size(data) == (fmt, 53, 37, 53 * 37)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (37, 53)


def test_header_size_of_hand_made_headers():
    vp8x = (
        b"RIFF\0\0\0\0WEBPVP8X" + bytes(8) + (52).to_bytes(3, "little") + (36).to_bytes(3, "little")
    )
    assert header_size(vp8x) == ("WebP", 53, 37, 1961)  # the canvas, stored minus one
    os2 = b"BM" + bytes(12) + struct.pack("<IHH", 12, 53, 37)  # a 12-byte OS/2 header
    assert header_size(os2) == ("BMP", 53, 37, 1961)
    top_down = b"BM" + bytes(12) + struct.pack("<Iii", 40, 53, -37)
    assert header_size(top_down) == ("BMP", 53, 37, 1961)


@pytest.mark.parametrize("ext", [".jp2", ".ppm", ".pfm", ".hdr", ".ras"])
def test_formats_whose_size_is_not_read_are_refused(ext, no_decoding):
    """OpenCV decodes these, but this module does not read their headers, so they are refused."""
    data = cv2.imencode(ext, SMALL.astype(np.float32) if ext in (".pfm", ".hdr") else SMALL)[1]
    exc = refused(data.tobytes(), 10**9)
    assert (exc.status, exc.code) == (400, "BadRequestImageFormat")
    assert "expected JPEG, PNG, BMP, GIF, WebP or TIFF" in exc.message
    assert no_decoding == []


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0", "ends inside"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\x04gAMA" + bytes(8), "must be IHDR"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "ends before a frame header"),
        (b"\xff\xd8\xff\xda\x00\x02", "0xFFDA comes before"),  # scan before frame
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10", "size of 16x0"),  # DNL height
        (b"GIF88a\x10\x00\x10\x00", "GIF87a or GIF89a"),
        (b"BM" + bytes(12) + struct.pack("<I", 20) + bytes(8), "DIB header size 20"),
        (b"II+\0\x08\0\0\0", "BigTIFF"),
    ],
)
def test_unreadable_headers_are_refused_with_the_reason(data, why, no_decoding):
    exc = refused(data)
    assert exc.code == "BadRequestImageFormat" and why in exc.message, exc.message


@given(
    st.sampled_from(
        [
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a",
            b"BM",
            b"II*\0",
            b"MM\0*",
            b"RIFF\0\0\0\0WEBP",
        ]
    ),
    st.binary(max_size=64),
)
def test_header_size_never_fails_other_than_with_header_error(prefix, rest):
    try:
        found = header_size(prefix + rest)
    except HeaderError:
        return
    assert found is not None and found[1] > 0 and found[2] > 0 and found[3] >= found[1] * found[2]


# --- the limit ---------------------------------------------------------------------------------


def tiff(width: int, height: int, *extra: tuple[int, int, int]) -> bytes:
    """A little-endian TIFF header with one directory of (tag, type, value) entries."""
    entries = [(256, 4, width), (257, 4, height), *extra]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries
    )
    return b"II*\0" + struct.pack("<I", 8) + ifd + bytes(4)


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (blank_png(30000, 30000), "PNG of 30000x30000 = 900000000 pixels"),
        (tiff(20000, 20000), "TIFF of 20000x20000"),
        (b"GIF89a" + struct.pack("<HH", 65535, 65535), "GIF of 65535x65535"),
        (b"BM" + bytes(12) + struct.pack("<Iii", 40, 40000, -40000), "BMP of 40000x40000"),
        # a 16x16 TIFF whose one strip, or tile, OpenCV would allocate at 2^24 rows
        (tiff(16, 16, (278, 4, 2**24)), "TIFF of 16x16 with tiles or strips of 268435456"),
        (tiff(16, 16, (322, 4, 2**14), (323, 4, 2**14)), "tiles or strips of 268435456"),
    ],
)
def test_images_above_the_limit_are_refused_before_decoding(data, size, no_decoding):
    exc = refused(data, 40_000_000)
    assert (exc.status, exc.code) == (413, "BadRequestImageDimensions")
    assert (
        size in exc.message and "40000000" in exc.message and "nothing was decoded" in exc.message
    )
    assert no_decoding == []


def test_a_duplicate_size_tag_in_a_tiff_is_refused(no_decoding):
    exc = refused(tiff(16, 16, (256, 4, 60000)), 10**9)  # which width would libtiff take?
    assert "appears twice" in exc.message


def jpeg_with_a_thumbnail(frame: np.ndarray, thumbnail: np.ndarray) -> bytes:
    """A JPEG whose EXIF segment (APP1) holds a small JPEG: the first SOF in the file is the
    thumbnail's, so a scan for the first SOF marker reads the wrong size."""
    main, thumb = encode(frame, ".jpg"), encode(thumbnail, ".jpg")
    app1 = b"Exif\0\0" + thumb
    return main[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + main[2:]


def test_a_thumbnail_in_exif_does_not_lie_about_the_size(no_decoding):
    data = jpeg_with_a_thumbnail(red_block_frame(), np.zeros((16, 16, 3), np.uint8))
    first_sof = data.index(b"\xff\xc0")
    assert struct.unpack(">HH", data[first_sof + 5 : first_sof + 9]) == (16, 16)  # the decoy
    assert header_size(data) == ("JPEG", 640, 480, 640 * 480)
    exc = refused(data, 100_000)
    assert "640x480" in exc.message and no_decoding == []


def test_a_header_that_lies_is_caught_by_the_decoded_shape(monkeypatch, caplog):
    """If the header reading were wrong (says 16x16), the decoded 640x480 is still refused."""
    monkeypatch.setattr(images_module, "header_size", lambda data: ("PNG", 16, 16, 256))
    exc = refused(encode(red_block_frame()), 100_000)
    assert (exc.status, exc.code) == (413, "BadRequestImageDimensions")
    assert "decoded to 640x480 = 307200 pixels" in exc.message and "said 16x16" in exc.message


def test_an_image_within_the_limit_decodes():
    assert decode_image(encode(SMALL), 53 * 37).shape == (37, 53, 3)
    assert refused(encode(SMALL), 53 * 37 - 1).code == "BadRequestImageDimensions"


def test_fetched_bytes_are_never_echoed():
    secret = b"aws_secret_access_key=AKIA-not-an-image"
    for data in (secret, b"\x89PNG\r\n\x1a\n" + secret):
        message = refused(data, source="http://metadata/x").message
        assert "http://metadata/x" in message and b"AKIA" not in message.encode()
    assert "starts with b'aws_secret_a'" in refused(secret).message  # an upload's own bytes


# --- through the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    with toy_detector(tmp_path_factory.mktemp("det")) as predictor:
        yield predictor


@pytest.fixture(scope="module")
def server(detector: Predictor) -> Iterator[PredictionServer]:
    with running(make_server(detector, "127.0.0.1", 0, max_body_bytes=2 * 1024 * 1024)) as made:
        yield made  # type: ignore[misc]


def test_a_huge_png_is_refused_fast_without_decoding(server, no_decoding):
    """0.9 MB declaring 30000x30000: OpenCV would take ~14 s and 5.3 GB to decode it."""
    data = blank_png(30000, 30000)
    start = time.monotonic()
    status, body, _ = call(server, "/image", data, {"Content-Type": "image/png"})
    assert time.monotonic() - start < 2.0
    assert status == 413, body
    assert body["error"]["code"] == "BadRequestImageDimensions"
    assert "30000x30000" in body["error"]["message"] and "40000000" in body["error"]["message"]
    assert no_decoding == []
    assert call(server, "/health")[0] == 200


def test_the_limit_is_configurable(detector):
    with running(make_server(detector, "127.0.0.1", 0, max_pixels=640 * 480 - 1)) as srv:
        status, body, _ = call(srv, "/image", encode(red_block_frame()))
        assert status == 413 and "640x480" in body["error"]["message"], body
    with running(make_server(detector, "127.0.0.1", 0, max_pixels=640 * 480)) as srv:
        assert call(srv, "/image", encode(red_block_frame()))[0] == 200
