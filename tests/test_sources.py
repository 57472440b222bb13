"""Contracts of edge_agent.sources against real OpenCV: files, folders and a local MJPEG stream."""

from __future__ import annotations

import http.server
import logging
import re
import socket
import socketserver
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.config import SourceConfig
from edge_agent.sources import FrameSource, SourceError, open_source, redact, resolve_kind
from edge_agent.types import Frame

W, H = 64, 48
CLIP_FRAMES = 12


def level_of(i: int) -> int:
    """Grey level that encodes frame number i, far enough apart to survive mp4v and JPEG."""
    return 10 + 20 * i


def make_cfg(uri: str | int | Path, **kw: Any) -> SourceConfig:
    """A SourceConfig with short reconnect delays so live tests stay fast."""
    kw.setdefault("reconnect_initial_delay_s", 0.05)
    kw.setdefault("reconnect_max_delay_s", 0.2)
    return SourceConfig(id="src1", uri=uri if isinstance(uri, int) else str(uri), **kw)


def make_clip(path: Path, n: int = CLIP_FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (W, H))
    assert writer.isOpened(), "mp4v writer unavailable"
    for i in range(n):
        writer.write(np.full((H, W, 3), level_of(i), np.uint8))
    writer.release()
    return path


def make_folder(folder: Path) -> Path:
    """img1..img10 with a corrupt jpg, grey and BGRA pngs, an upper-case name and non-images."""
    folder.mkdir()
    cv2.imwrite(str(folder / "img1.png"), np.full((H, W, 3), level_of(1), np.uint8))
    cv2.imwrite(str(folder / "img2.jpg"), np.full((H, W, 3), level_of(2), np.uint8))
    cv2.imwrite(str(folder / "img3.png"), np.full((H, W), level_of(3), np.uint8))
    (folder / "img4.jpg").write_bytes(b"\xff\xd8 this is not a jpeg " * 20)
    cv2.imwrite(str(folder / "IMG5.JPG"), np.full((H, W, 3), level_of(5), np.uint8))
    cv2.imwrite(str(folder / "img6.png"), np.full((H, W, 4), level_of(6), np.uint8))
    cv2.imwrite(str(folder / "img10.bmp"), np.full((H, W, 3), level_of(10), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".img0.jpg").write_bytes(b"macOS resource fork")
    return folder


def take(source: FrameSource, n: int) -> list[Frame]:
    out = []
    for frame in source.frames():
        out.append(frame)
        if len(out) == n:
            break
    return out


def levels(frames: list[Frame]) -> list[int]:
    return [round(float(f.image.mean())) for f in frames]


class Runner:
    """Iterates a source in a thread so the test can act while frames arrive."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.frames: list[Frame] = []
        self.thread = threading.Thread(target=self._run, name="test-source", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for frame in self.source.frames():
            self.frames.append(frame)

    def wait_for(self, n: int, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.frames) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.frames) >= n


class _Httpd(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stopping = False


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        i = 0
        try:
            while not self.server.stopping:  # type: ignore[attr-defined]
                _, jpg = cv2.imencode(".jpg", np.full((H, W, 3), level_of(i % 12), np.uint8))
                data = jpg.tobytes()
                head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                self.wfile.write(head.encode() + data + b"\r\n")
                i += 1
                time.sleep(0.02)  # about 50 fps
        except (BrokenPipeError, ConnectionResetError):
            pass


class MjpegServer:
    """A multipart/x-mixed-replace JPEG stream on 127.0.0.1, like a cheap IP camera."""

    def __init__(self) -> None:
        self.port = 0
        self._httpd: _Httpd | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        self._httpd = _Httpd(("127.0.0.1", self.port), _MjpegHandler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="test-mjpeg", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.stopping = True  # ends open streams, so the client sees the drop
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@pytest.fixture
def mjpeg() -> Any:
    server = MjpegServer()
    server.start()
    yield server
    server.stop()


# ---- kind resolution -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        (0, "camera"),
        ("2", "camera"),
        ("/dev/video1", "camera"),
        ("rtsp://10.0.0.5:554/live", "stream"),
        ("RTSPS://cam/live", "stream"),
        ("http://cam/mjpg", "stream"),
        ("https://cam/mjpg", "stream"),
        ("clip.mp4", "file"),
    ],
)
def test_auto_kind_from_uri(uri: str | int, kind: str) -> None:
    assert resolve_kind(make_cfg(uri)) == kind


def test_auto_kind_folder_and_explicit_kind_wins(tmp_path: Path) -> None:
    assert resolve_kind(make_cfg(tmp_path)) == "folder"
    assert resolve_kind(make_cfg("0", kind="file")) == "file"


def test_redact_hides_password_only() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.2/live") == "rtsp://admin:***@10.0.0.2/live"
    assert redact("http://cam/a:b@c") == "http://cam/a:b@c"
    assert redact("/videos/clip.mp4") == "/videos/clip.mp4"


# ---- video files -----------------------------------------------------------------------------


def test_file_yields_every_frame_in_order(tmp_path: Path) -> None:
    source = open_source(make_cfg(make_clip(tmp_path / "clip.mp4")))
    assert (source.kind, source.live, source.source_id) == ("file", False, "src1")
    frames = list(source.frames())
    assert [f.seq for f in frames] == list(range(CLIP_FRAMES))
    assert [f.origin for f in frames] == [f"clip.mp4#{i}" for i in range(CLIP_FRAMES)]
    assert all(f.image.shape == (H, W, 3) and f.source_id == "src1" for f in frames)
    assert np.all(np.abs(np.array(levels(frames)) - [level_of(i) for i in range(12)]) <= 6)
    assert all(a.ts <= b.ts for a, b in pairwise(frames))
    assert source.metrics.frames_read.value == CLIP_FRAMES
    source.close()


def test_image_sequence_pattern_is_a_file_source(tmp_path: Path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img_{i:04d}.png"), np.full((H, W, 3), level_of(i), np.uint8))
    source = open_source(make_cfg(tmp_path / "img_%04d.png", kind="file"))
    frames = list(source.frames())
    source.close()
    assert levels(frames) == [level_of(i) for i in range(5)]


def test_file_loop_keeps_counting(tmp_path: Path) -> None:
    source = open_source(make_cfg(make_clip(tmp_path / "clip.mp4"), on_eof="loop"))
    frames = take(source, 2 * CLIP_FRAMES + 5)
    source.close()
    assert [f.seq for f in frames] == list(range(2 * CLIP_FRAMES + 5))
    assert frames[CLIP_FRAMES].origin == "clip.mp4#0"
    assert abs(levels(frames)[CLIP_FRAMES] - levels(frames)[0]) <= 2


def test_fps_limit_paces_a_file_without_dropping(tmp_path: Path) -> None:
    source = open_source(make_cfg(make_clip(tmp_path / "clip.mp4", n=10), fps_limit=50))
    start = time.monotonic()
    frames = list(source.frames())
    elapsed = time.monotonic() - start
    assert len(frames) == 10 and source.metrics.dropped_fps_limit.value == 0
    assert elapsed >= 0.15  # 9 gaps of 20 ms
    assert frames[-1].ts - frames[0].ts >= 0.15


def test_missing_file_names_source_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"'src1'.*video file not found") as err:
        open_source(make_cfg(missing))
    assert str(missing) in str(err.value)


def test_file_opencv_cannot_open(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(SourceError, match=r"OpenCV cannot open .*junk\.mp4"):
        open_source(make_cfg(junk))


def test_stop_event_ends_a_paced_file_promptly(tmp_path: Path) -> None:
    stop = threading.Event()
    source = open_source(make_cfg(make_clip(tmp_path / "clip.mp4"), fps_limit=1), stop)
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    frames = list(source.frames())
    assert time.monotonic() - start < 1.0  # the 1 s wait for slot 2 was cut short
    assert len(frames) == 1


# ---- image folders ---------------------------------------------------------------------------


def test_folder_natural_order_conversion_and_corrupt_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.sources")
    source = open_source(make_cfg(make_folder(tmp_path / "imgs")))
    frames = list(source.frames())
    assert source.kind == "folder"
    names = ["img1.png", "img2.jpg", "img3.png", "IMG5.JPG", "img6.png", "img10.bmp"]
    assert [f.origin for f in frames] == names
    assert [f.seq for f in frames] == list(range(len(names)))
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    expected = [level_of(i) for i in (1, 2, 3, 5, 6, 10)]
    assert np.all(np.abs(np.array(levels(frames)) - expected) <= 3)
    assert source.metrics.frames_corrupt.value == 1
    assert source.metrics.frames_read.value == len(names)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "img4.jpg" in warnings[0]


def test_folder_loop_relists_and_warns_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.sources")
    folder = make_folder(tmp_path / "imgs")
    source = open_source(make_cfg(folder, on_eof="loop"))
    first = take(source, 6)
    cv2.imwrite(str(folder / "img11.png"), np.full((H, W, 3), 200, np.uint8))
    frames = first + take(source, 7)
    assert [f.origin for f in frames][6:] == [f.origin for f in first] + ["img11.png"]
    assert [f.seq for f in frames] == list(range(13))
    assert source.metrics.frames_corrupt.value == 2
    assert len([r for r in caplog.records if "img4.jpg" in r.getMessage()]) == 1


def test_empty_folder_lists_expected_extensions(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match=r"holds no images .*\.jpg.*\.png") as err:
        open_source(make_cfg(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_missing_folder_with_explicit_kind(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"image folder not found: {tmp_path / 'x'}")):
        open_source(make_cfg(tmp_path / "x", kind="folder"))


def test_close_inside_the_loop_ends_iteration(tmp_path: Path) -> None:
    source = open_source(make_cfg(make_folder(tmp_path / "imgs"), on_eof="loop"))
    seen = []
    for frame in source.frames():
        seen.append(frame)
        if len(seen) == 3:
            source.close()
    assert len(seen) == 3


# ---- live: MJPEG over HTTP through FFMPEG --------------------------------------------------------


def test_stream_reads_frames_and_stop_ends_it(mjpeg: MjpegServer) -> None:
    stop = threading.Event()
    source = open_source(make_cfg(mjpeg.url), stop)
    assert (source.kind, source.live) == ("stream", True)
    runner = Runner(source)
    assert runner.wait_for(10), "no frames from the local MJPEG stream"
    stop.set()
    runner.thread.join(timeout=2.0)
    assert not runner.thread.is_alive()
    frames = runner.frames
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert frames[0].origin == mjpeg.url and frames[0].image.shape == (H, W, 3)
    assert all(a.ts <= b.ts for a, b in pairwise(frames))
    assert source.metrics.reopens.value == 0


def test_stream_reconnects_after_server_restart(
    mjpeg: MjpegServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    stop = threading.Event()
    source = open_source(make_cfg(mjpeg.url), stop)
    runner = Runner(source)
    try:
        assert runner.wait_for(5)
        mjpeg.stop()
        time.sleep(0.4)  # several refused reopen attempts
        before = len(runner.frames)
        mjpeg.start()  # same port
        assert runner.wait_for(before + 5), "no frames after the server came back"
    finally:
        stop.set()
        runner.thread.join(timeout=2.0)
    assert source.metrics.reopens.value >= 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("streaming again" in m for m in messages)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Once per distinct reason (the stream ended; then reopening is refused), not per attempt.
    assert 1 <= len(warnings) <= 2 and "lost" in warnings[0], warnings
    assert source.metrics.reopens.value >= 2


def test_stream_fps_limit_drops_instead_of_queueing(mjpeg: MjpegServer) -> None:
    stop = threading.Event()
    source = open_source(make_cfg(mjpeg.url, fps_limit=5), stop)
    runner = Runner(source)
    time.sleep(0.8)
    stop.set()
    runner.thread.join(timeout=2.0)
    assert 1 <= len(runner.frames) <= 6  # 5 fps for 0.8 s, plus slack
    assert source.metrics.dropped_fps_limit.value >= 10  # the server sends about 50 fps


def test_dead_stream_retries_until_stopped() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stop = threading.Event()
    source = open_source(make_cfg(f"http://127.0.0.1:{port}/x"), stop)
    runner = Runner(source)
    time.sleep(0.6)
    start = time.monotonic()
    stop.set()
    runner.thread.join(timeout=2.0)
    assert time.monotonic() - start < 0.5
    assert runner.frames == []
    assert source.metrics.reopens.value >= 2  # 0.05, 0.1, 0.2 s backoff within 0.6 s
