"""Frame sources: cameras, network streams, video files and image folders, all read with OpenCV.

Two error channels (STYLE 6): what an operator can fix before start (a missing file, an empty
folder) raises SourceError from open_source; what the environment does at run time (a camera
unplugged, an RTSP server restarting, a corrupt JPEG) is logged once, counted in the stats
registry's SourceMetrics and retried or skipped, and never ends the pipeline.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_agent.capture_time import FolderClock, MediaClock
from edge_agent.config import SourceConfig
from edge_agent.config.sources import source_kind
from edge_agent.health.source_state import ENDED, STARTING, STREAMING, SourceStates
from edge_agent.health.stats import SourceMetrics, StatsRegistry
from edge_agent.types import Frame

log = logging.getLogger(__name__)

#: Longest a wait goes without noticing close() from another thread (`stop` wakes it at once).
CLOSE_POLL_S = 0.2
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
LIVE_KINDS = ("camera", "stream")

#: Files decode in one FFMPEG thread: capture stays only one frame ahead of inference, and
#: FFMPEG's default of a thread per core competes with inference for the cores (twice the CPU
#: per frame here for no gain) and holds more frames.
_FILE_PARAMS = [cv2.CAP_PROP_N_THREADS, 1]
_Capture = cv2.VideoCapture | None
_Item = tuple[np.ndarray | None, str, float | None]  # (raw image, origin, capture time or None)


class Source(Protocol):
    """What the agent needs of a source (FrameSource below; bench and tests pass cameras that
    cannot exist here)."""

    source_id: str
    live: bool  # keep only the newest frame (cameras, streams) rather than every frame

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class SourceError(RuntimeError):
    """A source that cannot be used as configured (path missing, nothing OpenCV can read)."""


def resolve_kind(cfg: SourceConfig) -> str:
    """The kind `auto` stands for, decided from the form of the uri (explicit kinds win)."""
    return source_kind(cfg)


def open_source(
    cfg: SourceConfig,
    stop: threading.Event | None = None,
    metrics: SourceMetrics | None = None,
    states: SourceStates | None = None,
) -> FrameSource:
    """Build the source for cfg and check what can be checked before start (else SourceError).

    `stop` may be shared by all sources: setting it ends every iterator promptly. `metrics`
    is where it counts and `states` where it says what it is doing (the agent's stats
    registry); private ones when not given.
    """
    from edge_agent.live_source import LiveSource  # it builds on FrameSource below

    kind = resolve_kind(cfg)
    cls: type[FrameSource] = {"file": VideoFileSource, "folder": ImageFolderSource}.get(
        kind, LiveSource
    )
    source = cls(cfg, kind, stop, metrics, states)
    source.open()
    return source


def redact(uri: str) -> str:
    """The uri with its password masked, so rtsp://user:pw@cam never reaches a log or an error."""
    scheme, sep, rest = uri.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not sep or not at or ":" not in userinfo or "/" in userinfo:
        return uri
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def _natural_key(name: str) -> tuple[list[int | str], str]:
    """Sort key putting img2 before img10; split() alternates text and digits, so types align."""
    parts = re.split(r"(\d+)", name.lower())
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _to_bgr(image: np.ndarray | None) -> np.ndarray | None:
    """A uint8 HxWx3 BGR image, or None when the decoder gave nothing usable."""
    if image is None or image.size == 0 or image.dtype != np.uint8:
        return None
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if image.ndim == 3 and image.shape[2] == 3 else None


def _capture(target: str | int, api: int = cv2.CAP_ANY, params: Sequence[int] = ()) -> _Capture:
    """An opened VideoCapture, or None: OpenCV reports failure by isOpened(), not by raising."""
    cap = cv2.VideoCapture(target, api, list(params))
    if cap.isOpened():
        return cap
    cap.release()
    return None


def _open_file(path: Path) -> _Capture:
    """FFMPEG with one decoder thread, else whichever backend can (image-sequence patterns)."""
    return _capture(str(path), cv2.CAP_FFMPEG, _FILE_PARAMS) or _capture(str(path))


def _read_image(path: Path) -> np.ndarray | None:
    """Decode one image file as BGR, or None if it cannot be read or decoded.

    Bytes + imdecode rather than imread: a file removed after listing is a catchable OSError,
    and imread cannot open non-ASCII paths on Windows. IMREAD_COLOR makes grey, BGRA and
    16-bit files 8-bit BGR.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
        return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error):
        return None


def list_images(folder: Path) -> list[Path]:
    """A folder's images in the order a folder source reads them (natural name order),
    skipping hidden ones (macOS leaves ._name.jpg beside every photo); [] if unreadable."""
    try:
        names = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    except OSError:
        return []
    images = [p for p in names if not p.name.startswith(".") and p.is_file()]
    return sorted(images, key=lambda p: _natural_key(p.name))


class FrameSource:
    """One configured source; frames() yields Frames until the end, `stop`, or close()."""

    def __init__(
        self,
        cfg: SourceConfig,
        kind: str,
        stop: threading.Event | None = None,
        metrics: SourceMetrics | None = None,
        states: SourceStates | None = None,
    ) -> None:
        self.source_id = cfg.id
        self.kind = kind
        self.live = kind in LIVE_KINDS
        self.metrics = metrics or StatsRegistry().source(cfg.id)
        self._states = states if states is not None else SourceStates()
        self._states.set(cfg.id, STARTING)
        self._cfg = cfg
        self._stop = stop if stop is not None else threading.Event()
        self._closed = False
        self._cap: cv2.VideoCapture | None = None
        self._gen: Generator[Frame, None, None] | None = None
        self._seq = 0
        self._next_slot = 0.0
        self._warned: set[str] = set()

    def open(self) -> None:
        """Check what an operator must fix before start; raise SourceError if it is wrong."""

    def _images(self) -> Iterator[_Item]:
        raise NotImplementedError

    def frames(self) -> Iterator[Frame]:
        """Frames in order with seq counting from 0 across loops and reconnects."""
        self._gen = self._frames()
        return self._gen

    def close(self) -> None:
        """Release the capture; safe to call twice, and from another thread while iterating."""
        self._closed = True
        if self._gen is not None:
            try:
                self._gen.close()  # runs the generator's finally, which releases the capture
            except ValueError:
                return  # running in another thread: it sees _closed within CLOSE_POLL_S
        self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _frames(self) -> Generator[Frame, None, None]:
        try:
            for raw, origin, ts in self._images():
                if self._stopped():
                    return
                image = _to_bgr(raw)
                if image is None:
                    self._skip_corrupt(origin)
                    continue
                if self.live:
                    # Read and discard rather than sleep, so the stream buffer never goes stale.
                    if not self._take_slot(time.monotonic()):
                        self.metrics.dropped_fps_limit.inc()
                        continue
                elif not self._wait_for_slot():
                    return
                ts = time.time() if ts is None else ts
                frame = Frame(image, self.source_id, self._seq, ts, origin)
                if self._seq == 0 and not self.live:
                    self._states.set(self.source_id, STREAMING)
                self._seq += 1
                self.metrics.frames_read.inc()
                self._states.frame(self.source_id, ts, image.shape[1], image.shape[0])
                yield frame
            if not self._stopped():
                self._states.set(self.source_id, ENDED)
        finally:
            self._release()

    def _stopped(self) -> bool:
        return self._closed or self._stop.is_set()

    def _wait(self, delay_s: float) -> bool:
        """Sleep up to delay_s; True if stop or close() came meanwhile."""
        deadline = time.monotonic() + delay_s
        while not self._stopped():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stop.wait(min(left, CLOSE_POLL_S))
        return True

    def _take_slot(self, now: float) -> bool:
        """fps_limit as a grid of slots 1/fps apart; restart the grid when a whole slot behind."""
        if self._cfg.fps_limit is None:
            return True
        if now < self._next_slot:
            return False
        interval = 1.0 / self._cfg.fps_limit
        if now - self._next_slot >= interval:
            self._next_slot = now
        self._next_slot += interval
        return True

    def _wait_for_slot(self) -> bool:
        """Files and folders keep every frame: sleep until the next slot. False if stopped."""
        if self._cfg.fps_limit is not None:
            if self._wait(self._next_slot - time.monotonic()):
                return False
            self._take_slot(time.monotonic())
        return not self._stopped()

    def _skip_corrupt(self, origin: str) -> None:
        self.metrics.frames_corrupt.inc()
        key = origin if self.kind == "folder" else ""  # once per image file, once per stream
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        log.log(level, "source %s: skipped undecodable frame %s", self.source_id, origin)

    def _error(self, problem: str) -> SourceError:
        uri = redact(str(self._cfg.uri))
        return SourceError(f"source {self.source_id!r} (uri {uri!r}): {problem}")

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource(FrameSource):
    """A video file (or an OpenCV image-sequence pattern such as img_%04d.jpg); every frame kept."""

    def open(self) -> None:
        self._path = path = Path(str(self._cfg.uri)).expanduser()
        is_pattern = "%" in path.name and path.parent.is_dir()
        if path.is_dir():
            raise self._error(f"expected a video file, but {path} is a folder (use kind: folder)")
        if not (path.is_file() or is_pattern):
            raise self._error(f"video file not found: {path}")
        self._cap = _open_file(path)
        if self._cap is None:
            raise self._error(f"OpenCV cannot open {path} (expected a video FFMPEG can decode)")
        self._clock = MediaClock()  # frames carry media time: a file is read faster than filmed

    def _images(self) -> Iterator[_Item]:
        # Loop by reopening: seeking back (CAP_PROP_POS_FRAMES) is inexact with some codecs.
        while not self._stopped():
            if self._cap is None:
                self._cap = _open_file(self._path)
                if self._cap is None:
                    log.error("source %s: cannot reopen %s; stopping", self.source_id, self._path)
                    return
            index = 0
            self._clock.start(self._cap.get(cv2.CAP_PROP_FPS))
            while not self._stopped():
                ok, image = self._cap.read()
                if not ok:  # end of file; OpenCV does not tell it apart from a broken tail
                    break
                ts = self._clock.at(self._cap.get(cv2.CAP_PROP_POS_MSEC), index)
                yield image, f"{self._path.name}#{index}", ts
                index += 1
            self._release()
            if self._cfg.on_eof == "stop":
                return
            if index == 0:
                log.warning("source %s: %s has no frames; not looping", self.source_id, self._path)
                return


class ImageFolderSource(FrameSource):
    """Images in a folder in natural name order; the folder is listed again on every loop."""

    def open(self) -> None:
        self._folder = folder = Path(str(self._cfg.uri)).expanduser()
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "not found"
            raise self._error(f"image folder {what}: {folder}")
        if not self._list():
            raise self._error(
                f"folder {folder} holds no images (expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}, any case)"
            )
        self._clock = FolderClock(self.source_id)  # EXIF time, else the file's

    def _list(self) -> list[Path]:
        return list_images(self._folder)

    def _images(self) -> Iterator[_Item]:
        while True:
            good = 0
            for path in self._list():
                if self._stopped():
                    return
                image = _read_image(path)
                good += image is not None
                yield image, path.name, None if image is None else self._clock.time_of(path)
            if self._cfg.on_eof == "stop" or self._stopped():
                return
            if good == 0:  # looping would spin on a folder with nothing readable
                log.warning("source %s: nothing readable in %s", self.source_id, self._folder)
                return
