"""When a picture was taken, for sources that are read faster or later than they were filmed.

A camera trap's folder is copied off an SD card and read in seconds; a video file is decoded
faster than real time. Tracking and camera-trap sequences measure gaps in seconds, so their
frames must carry the time of capture, not the time of reading:

- an image's time is its EXIF ``DateTimeOriginal`` (with ``OffsetTimeOriginal`` and
  ``SubSecTimeOriginal`` when present), else ``DateTimeDigitized``, else IFD0 ``DateTime``,
  else the file's modification time. Any EXIF time beats the file time: a card copied without
  keeping times gives every file the copy's time, which would merge the whole card into one
  sequence. A valid but odd date (a clock reset to 2000, a date in the future) is kept for the
  same reason, since gaps between pictures stay right, and logged once per folder. A damaged
  offset or sub-second tag is ignored (the date is read as local time, without fractions), a
  damaged date falls through to the next tag, and either is logged once per folder: one bad
  picture never stops its folder;
- a video frame's time is the time the file was opened plus the frame's position in it.

EXIF is read with Pillow from the first ``EXIF_SCAN_BYTES`` of the file: Pillow parses the
header without decoding a pixel, and the bound keeps a hostile file from being read twice
over. JPEG keeps EXIF in its first 64 KiB segment; PNG and WebP before the picture. Other
formats (TIFF, BMP) get the file time.
"""

from __future__ import annotations

import io
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from PIL import ExifTags, Image

log = logging.getLogger(__name__)

#: Bytes read to find EXIF: an EXIF APP1 segment is at most 64 KiB and comes first or after a
#: JFIF APP0; 256 KiB leaves room for a few other segments before it.
EXIF_SCAN_BYTES = 256 * 1024
#: Formats Pillow is allowed to parse (others carry no EXIF we read).
EXIF_FORMATS = ("JPEG", "PNG", "WEBP")  # JPEG includes MPO (multi-picture) files
#: Dates before 2000 are kept but logged: no EXIF camera took them (a reset clock).
ODD_BEFORE_TS = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
#: Dates further ahead of the device clock than this are kept but logged (a clock set wrong).
ODD_AHEAD_S = 24 * 3600.0

_IFD_EXIF = ExifTags.IFD.Exif
_T = ExifTags.Base
#: (time tag, its offset tag, its sub-second tag, the IFD holding them), best first.
_TIME_TAGS = (
    (_T.DateTimeOriginal, _T.OffsetTimeOriginal, _T.SubsecTimeOriginal, "exif"),
    (_T.DateTimeDigitized, _T.OffsetTimeDigitized, _T.SubsecTimeDigitized, "exif"),
    (_T.DateTime, _T.OffsetTime, _T.SubsecTime, "ifd0"),
)
_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})|Z")
#: Sub-seconds: at most nanoseconds. Longer is a damaged tag (and int() of thousands of digits
#: raises, or takes quadratic time).
_SUBSEC = re.compile(r"[0-9]{1,9}")
#: Dates cameras write when their clock was never set: not damage, nothing to tell.
_UNSET = re.compile(r"[0: ]*")

Origin = Literal["exif", "mtime"]


@dataclass(frozen=True)
class CaptureTime:
    """A capture time in seconds since the epoch, and where it came from."""

    ts: float
    origin: Origin


def _text(value: object) -> str:
    """An EXIF ASCII value as text: cameras pad with NULs and spaces."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip("\x00 \t")


def parse_exif_datetime(
    value: object, offset: object = None, subsec: object = None
) -> float | None:
    """Seconds since the epoch for an EXIF date ("2024:05:01 06:00:00"), or None when it is
    not a real date ("0000:00:00 00:00:00", blanks, month 13). Without an offset the time is
    the device's local time, as cameras write their own local clock. A damaged offset or
    sub-second value is ignored; never raises."""
    return _parse(value, offset, subsec, [])


def _offset(value: object) -> timezone | None:
    """A UTC offset ("+02:00", "Z"), or None unless hours < 24 and minutes < 60."""
    zone = _OFFSET.fullmatch(_text(value))
    if zone is None:
        return None
    sign, hours, minutes = zone.groups()
    if not hours:
        return UTC
    if int(hours) >= 24 or int(minutes) >= 60:
        return None
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


def _parse(value: object, offset: object, subsec: object, damaged: list[str]) -> float | None:
    """parse_exif_datetime, appending to ``damaged`` what was present but unusable."""
    text = _text(value)
    match = _DATE.fullmatch(text)
    if match is None:
        if not _UNSET.fullmatch(text):
            damaged.append(f"date {text[:40]!r}")
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        if not _UNSET.fullmatch(text):
            damaged.append(f"date {text!r}")
        return None
    if subsec is not None:
        fraction = _text(subsec)
        if _SUBSEC.fullmatch(fraction):
            moment += timedelta(seconds=int(fraction) / 10 ** len(fraction))
        elif fraction:
            damaged.append(f"sub-seconds {fraction[:40]!r}")
    if offset is not None:
        zone = _offset(offset)
        if zone is not None:
            moment = moment.replace(tzinfo=zone)
        elif _text(offset):
            damaged.append(f"offset {_text(offset)[:40]!r}")
    try:
        return moment.timestamp()  # naive: local time (mktime)
    except (OverflowError, OSError, ValueError):
        damaged.append(f"date {text!r}")
        return None


def exif_time(path: Path, damaged: list[str] | None = None) -> float | None:
    """The EXIF capture time of an image file, or None when it has none that is usable;
    time tags present but unusable are appended to ``damaged``.

    Never raises: a missing, truncated or malformed header just means no EXIF time."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(EXIF_SCAN_BYTES)
        # Pillow parses untrusted bytes: any failure (SyntaxError, struct.error, a decompression
        # bomb refused by size) means "no usable EXIF", never a reason to stop the source. The
        # EXIF bytes are taken from what open() parsed: getexif() would decode a PNG without
        # them, the very work this must never do.
        with Image.open(io.BytesIO(head), formats=EXIF_FORMATS) as img:
            raw = img.info.get("exif")
        if not isinstance(raw, bytes) or not raw:
            return None
        ifd0 = Image.Exif()
        ifd0.load(raw)
        sub = ifd0.get_ifd(_IFD_EXIF)
    except Exception:
        return None
    told = [] if damaged is None else damaged
    for tag, offset_tag, subsec_tag, where in _TIME_TAGS:
        ifd = sub if where == "exif" else ifd0
        try:
            if tag not in ifd:
                continue
            # Offsets and sub-seconds always live in the Exif IFD, even for IFD0's DateTime.
            ts = _parse(ifd[tag], sub.get(offset_tag), sub.get(subsec_tag), told)
        except Exception as exc:  # a value of a type no camera writes: the next tag
            told.append(f"{ExifTags.TAGS.get(tag, tag)} ({type(exc).__name__})")
            continue
        if ts is not None:
            return ts
    return None


def file_capture_time(path: Path, damaged: list[str] | None = None) -> CaptureTime:
    """EXIF time, else the modification time; ``path`` must exist (OSError otherwise).
    Damaged EXIF time tags are appended to ``damaged``."""
    ts = exif_time(path, damaged)
    if ts is not None:
        return CaptureTime(ts, "exif")
    return CaptureTime(path.stat().st_mtime, "mtime")


class FolderClock:
    """Capture times of one folder's images, saying once per folder what is odd about them
    (file times in use, a camera clock that looks wrong)."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._told: set[str] = set()

    def time_of(self, path: Path) -> float | None:
        """The capture time of ``path``, or None if the file is gone (the reader's time then).
        Never raises for a file's content: that would stop the whole folder."""
        damaged: list[str] = []
        try:
            found = file_capture_time(path, damaged)
        except OSError:
            return None
        except Exception as exc:  # a parser bug on one picture: its file time, not a stop
            self._tell_once(
                "failed",
                logging.WARNING,
                "%s: reading its capture time failed (%s: %s): using its file time",
                path.name,
                type(exc).__name__,
                exc,
            )
            try:
                return path.stat().st_mtime
            except OSError:
                return None
        if damaged:
            self._tell_once(
                "damaged",
                logging.WARNING,
                "%s has damaged EXIF time tags (%s): ignored",
                path.name,
                ", ".join(damaged),
            )
        if found.origin == "mtime":
            self._tell_once(  # normal for PNGs and edited copies: not a warning
                "mtime",
                logging.INFO,
                "%s has no EXIF capture time: using file modification times",
                path.name,
            )
        elif found.ts < ODD_BEFORE_TS or found.ts > time.time() + ODD_AHEAD_S:
            self._tell_once(
                "odd",
                logging.WARNING,
                "%s was taken at %s by its EXIF: check the camera's clock",
                path.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(found.ts)) + " UTC",
            )
        return found.ts

    def _tell_once(self, what: str, level: int, message: str, *args: object) -> None:
        if what not in self._told:
            self._told.add(what)
            log.log(level, "source %s: " + message, self.source_id, *args)


class MediaClock:
    """Capture times of a video's frames: when the file was opened plus each frame's position.

    Never goes backwards: a file looped faster than real time starts its next pass after the
    last frame of the previous one, not at the (earlier) time of reopening."""

    def __init__(self) -> None:
        self._origin = 0.0
        self._fps = 0.0
        self._last = -math.inf

    def start(self, fps: float) -> None:
        """A pass over the file begins now; ``fps`` is the container's (0 if unknown)."""
        self._fps = fps if math.isfinite(fps) and fps > 0 else 0.0
        step = 1.0 / self._fps if self._fps else 0.0
        self._origin = max(time.time(), self._last + step)

    def at(self, pos_ms: float, index: int) -> float:
        """The time of frame ``index`` whose position OpenCV gives as ``pos_ms``
        (``CAP_PROP_POS_MSEC`` after the read); the frame rate, else the wall clock, when the
        position is unknown (some containers and image sequences report nothing useful)."""
        if math.isfinite(pos_ms) and pos_ms >= 0 and (pos_ms > 0 or index == 0):
            ts = self._origin + pos_ms / 1000.0
        elif self._fps:
            ts = self._origin + index / self._fps
        else:
            ts = time.time()
        self._last = max(ts, self._last)
        return self._last
