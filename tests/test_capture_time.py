"""Capture times: EXIF read from the header (with offset and sub-seconds), the file time when
there is none, and media time for video frames; folder and file sources carry them."""

from __future__ import annotations

import io
import logging
import os
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from edge_agent.capture_time import (
    EXIF_SCAN_BYTES,
    FolderClock,
    MediaClock,
    exif_time,
    file_capture_time,
    parse_exif_datetime,
)
from edge_agent.config import SourceConfig
from edge_agent.sources import open_source
from tests.helpers.timezone import pinned_timezone

T = ExifTags.Base
MTIME = 1_600_000_000.0  # 2020-09-13 12:26:40 UTC, set on every test file


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """EXIF without an offset is local time: pin the zone so expected values are exact."""
    with pinned_timezone("UTC"):
        yield


def epoch(*args: int, tz: timezone = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def write_jpeg(
    path: Path,
    tags: dict[int, str] | None = None,
    ifd0: dict[int, str] | None = None,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """A JPEG whose Exif IFD holds ``tags`` and IFD0 ``ifd0``; mtime pinned to MTIME."""
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, value in (tags or {}).items():
        sub[tag] = value
    image = Image.new("RGB", size, (40, 160, 90))
    image.save(path, "JPEG", exif=exif if (tags or ifd0) else b"")
    os.utime(path, (MTIME, MTIME))
    return path


def insert_segments(jpeg: bytes, *segments: tuple[int, bytes]) -> bytes:
    """The JPEG with (marker, payload) segments inserted right after SOI."""
    assert jpeg[:2] == b"\xff\xd8"
    out = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(p) + 2) + p for m, p in segments)
    return jpeg[:2] + out + jpeg[2:]


# ---- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "offset", "subsec", "expected"),
    [
        ("2024:05:01 06:00:00", None, None, epoch(2024, 5, 1, 6, 0, 0)),
        ("2024:05:01 06:00:00\x00", None, None, epoch(2024, 5, 1, 6, 0, 0)),  # NUL padded
        (b"2024:05:01 06:00:00", None, None, epoch(2024, 5, 1, 6, 0, 0)),
        ("2024-05-01 06:00:00", None, None, epoch(2024, 5, 1, 6, 0, 0)),  # dashes seen in the wild
        ("2024:05:01 06:00:00", "+02:00", None, epoch(2024, 5, 1, 4, 0, 0)),
        ("2024:05:01 06:00:00", "-05:30", None, epoch(2024, 5, 1, 11, 30, 0)),
        ("2024:05:01 06:00:00", "Z", "5", epoch(2024, 5, 1, 6, 0, 0) + 0.5),
        ("2024:05:01 06:00:00", "+02:00", "025", epoch(2024, 5, 1, 4, 0, 0) + 0.025),
        ("2024:05:01 06:00:00", "junk", "ab", epoch(2024, 5, 1, 6, 0, 0)),  # bad parts ignored
        ("2024:05:01 06:00:00", "+99:00", None, epoch(2024, 5, 1, 6, 0, 0)),  # not an offset
        ("2024:05:01 06:00:00", "+23:60", None, epoch(2024, 5, 1, 6, 0, 0)),
        ("2024:05:01 06:00:00", "-23:59", None, epoch(2024, 5, 2, 5, 59, 0)),
        ("2024:05:01 06:00:00", None, "5" * 5000, epoch(2024, 5, 1, 6, 0, 0)),  # int() limit
        ("2024:05:01 06:00:00", None, "1234567891", epoch(2024, 5, 1, 6, 0, 0)),  # > 9 digits
        ("2024:05:01 06:00:00", None, "123456789", epoch(2024, 5, 1, 6, 0, 0) + 0.123456789),
        ("2024:05:01 06:00:00", None, "\u00b2", epoch(2024, 5, 1, 6, 0, 0)),  # isdigit, not int
        ("0000:00:00 00:00:00", None, None, None),  # what cameras write when never set
        ("    :  :     :  :  ", None, None, None),
        ("2024:13:01 06:00:00", None, None, None),
        ("2024:02:30 06:00:00", None, None, None),
        ("yesterday", None, None, None),
        (12345, None, None, None),
    ],
)
def test_parse_exif_datetime(
    value: object, offset: object, subsec: object, expected: float | None
) -> None:
    got = parse_exif_datetime(value, offset, subsec)
    assert got == (pytest.approx(expected, abs=1e-6) if expected is not None else None)


def test_naive_time_is_the_device_local_time() -> None:
    os.environ["TZ"] = "Europe/Berlin"  # restored by the fixture
    time.tzset()
    summer = datetime(2024, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))).timestamp()
    assert parse_exif_datetime("2024:07:01 12:00:00") == summer


# ---- files -----------------------------------------------------------------------------------


def test_date_time_original_with_offset_and_subsec(tmp_path: Path) -> None:
    tags = {
        T.DateTimeOriginal: "2024:05:01 06:00:00",
        T.OffsetTimeOriginal: "+02:00",
        T.SubsecTimeOriginal: "25",
        T.DateTimeDigitized: "2030:01:01 00:00:00",  # second choice: not used
    }
    path = write_jpeg(tmp_path / "a.jpg", tags, {T.DateTime: "2031:01:01 00:00:00"})
    found = file_capture_time(path)
    assert found.origin == "exif"
    assert found.ts == pytest.approx(epoch(2024, 5, 1, 4, 0, 0) + 0.25)


def test_falls_back_digitized_then_ifd0_then_mtime(tmp_path: Path) -> None:
    digitized = write_jpeg(tmp_path / "d.jpg", {T.DateTimeDigitized: "2024:05:01 07:00:00"})
    assert exif_time(digitized) == epoch(2024, 5, 1, 7, 0, 0)
    ifd0 = write_jpeg(tmp_path / "i.jpg", ifd0={T.DateTime: "2024:05:01 08:00:00"})
    assert exif_time(ifd0) == epoch(2024, 5, 1, 8, 0, 0)
    unset = write_jpeg(
        tmp_path / "u.jpg",
        {T.DateTimeOriginal: "0000:00:00 00:00:00"},
        {T.DateTime: "2024:05:01 09:00:00"},
    )
    assert exif_time(unset) == epoch(2024, 5, 1, 9, 0, 0)  # the unset original is skipped
    plain = write_jpeg(tmp_path / "p.jpg")
    assert exif_time(plain) is None
    assert file_capture_time(plain).ts == MTIME and file_capture_time(plain).origin == "mtime"


def test_png_and_webp_exif(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[T.Make] = "trapcam"  # Pillow writes no PNG eXIf chunk for an empty IFD0
    exif.get_ifd(ExifTags.IFD.Exif)[T.DateTimeOriginal] = "2024:05:01 06:00:00"
    for fmt in ("PNG", "WEBP"):
        path = tmp_path / f"x.{fmt.lower()}"
        Image.new("RGB", (8, 8)).save(path, fmt, exif=exif)
        assert exif_time(path) == epoch(2024, 5, 1, 6, 0, 0), fmt


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow says so, then we fall back
def test_broken_exif_and_non_images_give_the_file_time(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    broken = tmp_path / "broken.jpg"  # an Exif APP1 whose TIFF header is garbage
    broken.write_bytes(
        insert_segments(buf.getvalue(), (0xE1, b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"))
    )
    short = tmp_path / "short.jpg"  # an Exif APP1 cut in the middle of the file
    short.write_bytes(b"\xff\xd8\xff\xe1\x20\x00Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05")
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 100_000, np.uint8).tobytes())
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (broken, short, noise, empty):
        os.utime(path, (MTIME, MTIME))
        assert exif_time(path) is None, path.name
        assert file_capture_time(path).ts == MTIME
    with pytest.raises(OSError):
        file_capture_time(tmp_path / "gone.jpg")


def test_header_only_never_the_picture(tmp_path: Path) -> None:
    """The picture data after the header is garbage and huge: the time is still read, and a
    header beyond the scan bound is not looked for."""
    path = write_jpeg(
        tmp_path / "big.jpg", {T.DateTimeOriginal: "2024:05:01 06:00:00"}, size=(6000, 4000)
    )
    data = bytearray(path.read_bytes())
    sos = data.index(b"\xff\xda")
    data[sos + 20 :] = b"\x00" * (len(data) - sos - 20)  # scan data destroyed
    path.write_bytes(bytes(data))
    assert exif_time(path) == epoch(2024, 5, 1, 6, 0, 0)
    # EXIF pushed past the bound by 60 KiB comment segments: not found, the file time is used.
    filler = [(0xFE, b"x" * 60_000)] * (EXIF_SCAN_BYTES // 60_000 + 1)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[T.DateTimeOriginal] = "2024:05:01 06:00:00"
    Image.new("RGB", (16, 16)).save(buf, "JPEG", exif=exif)
    jpeg = buf.getvalue()
    far = tmp_path / "far.jpg"
    far.write_bytes(jpeg[:2] + insert_segments(b"\xff\xd8", *filler)[2:] + jpeg[2:])
    assert exif_time(far) is None
    near = tmp_path / "near.jpg"
    near.write_bytes(jpeg[:2] + insert_segments(b"\xff\xd8", *filler[:2])[2:] + jpeg[2:])
    assert exif_time(near) == epoch(2024, 5, 1, 6, 0, 0)


def test_odd_dates_are_kept_and_told_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera clock set to the future or reset to 1980 still gives true gaps between
    pictures; the file time (often the copy's) would not. Kept, and logged once per folder."""
    caplog.set_level(logging.INFO, logger="edge_agent.capture_time")
    clock = FolderClock("trap")
    future = [
        write_jpeg(tmp_path / f"f{i}.jpg", {T.DateTimeOriginal: f"2099:01:01 00:00:0{i}"})
        for i in range(2)
    ]
    old = write_jpeg(tmp_path / "old.jpg", {T.DateTimeOriginal: "1980:01:01 00:00:00"})
    plain = [write_jpeg(tmp_path / f"p{i}.jpg") for i in range(2)]
    assert [clock.time_of(p) for p in future] == [epoch(2099, 1, 1, 0, 0, s) for s in (0, 1)]
    assert clock.time_of(old) == epoch(1980, 1, 1, 0, 0, 0)
    assert [clock.time_of(p) for p in plain] == [MTIME, MTIME]
    assert clock.time_of(tmp_path / "gone.jpg") is None
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (
            logging.WARNING,
            "source trap: f0.jpg was taken at 2099-01-01 00:00:00 UTC by its "
            "EXIF: check the camera's clock",
        ),
        (
            logging.INFO,
            "source trap: p0.jpg has no EXIF capture time: using file modification times",
        ),
    ]


def test_damaged_time_tags_never_stop_a_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An impossible offset or a 5,000-digit sub-second tag in the middle of a folder: every
    picture is read, the damaged parts are ignored, and that is said once."""
    caplog.set_level(logging.WARNING, logger="edge_agent.capture_time")
    folder = tmp_path / "trap"
    folder.mkdir()
    date = {T.DateTimeOriginal: "2024:05:01 06:00:00"}
    write_jpeg(folder / "IMG_0001.JPG", date)
    write_jpeg(folder / "IMG_0002.JPG", {**date, T.OffsetTimeOriginal: "+99:00"})
    write_jpeg(folder / "IMG_0003.JPG", {**date, T.SubsecTimeOriginal: "7" * 5000})
    write_jpeg(  # a damaged original falls through to the digitized time
        folder / "IMG_0004.JPG",
        {T.DateTimeOriginal: "2024:05:01 06:00:99", T.DateTimeDigitized: "2024:05:01 06:00:04"},
    )
    write_jpeg(folder / "IMG_0005.JPG", {T.DateTimeOriginal: "2024:05:01 06:00:05"})
    source = open_source(SourceConfig(id="trap", uri=str(folder)))
    frames = list(source.frames())
    source.close()
    assert [f.origin for f in frames] == [f"IMG_000{i}.JPG" for i in range(1, 6)]
    t = epoch(2024, 5, 1, 6, 0, 0)
    assert [f.ts for f in frames] == [t, t, t, t + 4, t + 5]
    (record,) = caplog.records
    assert record.getMessage() == (
        "source trap: IMG_0002.JPG has damaged EXIF time tags (offset '+99:00'): ignored"
    )


def test_a_failing_parser_gives_the_file_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a picture's header makes the parser do, the folder goes on."""
    import edge_agent.capture_time as capture_time

    def broken(path: Path, damaged: list[str] | None = None) -> float | None:
        raise ValueError("offset must be a timedelta")

    monkeypatch.setattr(capture_time, "exif_time", broken)
    clock = FolderClock("trap")
    paths = [
        write_jpeg(tmp_path / f"{i}.jpg", {T.DateTimeOriginal: "2024:05:01 06:00:00"})
        for i in range(2)
    ]
    with caplog.at_level(logging.WARNING, logger="edge_agent.capture_time"):
        assert [clock.time_of(p) for p in paths] == [MTIME, MTIME]
        assert clock.time_of(tmp_path / "gone.jpg") is None
    assert len(caplog.records) == 1 and "offset must be a timedelta" in caplog.text


# ---- sources ---------------------------------------------------------------------------------


def test_folder_frames_carry_exif_time_else_file_time(tmp_path: Path) -> None:
    folder = tmp_path / "trap"
    folder.mkdir()
    write_jpeg(folder / "IMG_0001.JPG", {T.DateTimeOriginal: "2024:05:01 06:00:00"})
    write_jpeg(
        folder / "IMG_0002.JPG",
        {T.DateTimeOriginal: "2024:05:01 06:00:01", T.SubsecTimeOriginal: "5"},
    )
    (folder / "IMG_0003.JPG").write_bytes(b"\xff\xd8 not a jpeg" * 10)  # skipped by the source
    write_jpeg(folder / "IMG_0004.JPG")  # no EXIF: MTIME
    source = open_source(SourceConfig(id="trap", uri=str(folder)))
    frames = list(source.frames())
    source.close()
    assert [f.origin for f in frames] == ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0004.JPG"]
    assert [f.ts for f in frames] == [
        epoch(2024, 5, 1, 6, 0, 0),
        epoch(2024, 5, 1, 6, 0, 1) + 0.5,
        MTIME,
    ]


def write_clip(path: Path, n: int, fps: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_video_frames_carry_media_time(tmp_path: Path) -> None:
    """Decoded far faster than 10 fps, the frames are still 0.1 s apart, from the open."""
    clip = write_clip(tmp_path / "clip.mp4", 8, fps=10)
    before = time.time()
    source = open_source(SourceConfig(id="cam", uri=str(clip)))
    frames = list(source.frames())
    after = time.time()
    source.close()
    assert len(frames) == 8
    assert before <= frames[0].ts <= after
    assert np.allclose(np.diff([f.ts for f in frames]), 0.1, atol=1e-6)


def test_looped_video_never_goes_back_in_time(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 5, fps=2)  # 2.5 s of video, read in milliseconds
    source = open_source(SourceConfig(id="cam", uri=str(clip), on_eof="loop"))
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 12:
            break
    source.close()
    gaps = np.diff([f.ts for f in frames])
    assert np.allclose(gaps, 0.5, atol=1e-6), gaps  # the second pass starts one frame later
    assert all(a.seq < b.seq for a, b in pairwise(frames))


def test_media_clock_without_positions() -> None:
    clock = MediaClock()
    clock.start(25.0)
    t0 = clock.at(0.0, 0)
    assert clock.at(float("nan"), 1) == pytest.approx(t0 + 0.04)  # frame rate
    assert clock.at(0.0, 2) == pytest.approx(t0 + 0.08)  # a stuck position is not believed
    blind = MediaClock()
    blind.start(0.0)
    before = time.time()
    got = [blind.at(-1.0, i) for i in range(3)]
    assert before <= got[0] <= time.time() and got == sorted(got)  # the wall clock
