"""GuardedCapture against real OpenCV/FFmpeg on local sockets: a silent server (accepts, never
answers) and an MJPEG server that sends a few frames and then goes silent. The backstop tests
turn FFmpeg's own timeouts off, so only the worker-thread deadline can end the stall."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent import ffmpeg_log
from edge_agent.backend_logs import classify
from edge_agent.capture_guard import CaptureError, CaptureTimeout, GuardedCapture, wait_for_stuck
from tests.helpers.mjpeg_server import MjpegCamera
from tests.helpers.rtsp_server import RtspCamera, rtsp_available

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # subprocesses import edge_agent from this tree
TIMEOUT_S = 1.0
BOUND_S = 2 * TIMEOUT_S  # generous: the brief's bound for any guarded call


@contextmanager
def tcp_server(frames: int | None, *, garbage: bool = False, close: bool = False) -> Iterator[str]:
    """http://127.0.0.1:port/ that never answers (frames None) or sends `frames` MJPEG frames
    (random bytes that are no JPEG with `garbage`) and then holds the connection open in
    silence (closes it with `close`)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    _ok, buf = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
    jpeg = buf.tobytes()

    def handle(conn: socket.socket) -> None:
        held.append(conn)
        if frames is None:
            return
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n"
        )
        for _ in range(frames):
            body = os.urandom(2000) if garbage else jpeg
            head = b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(body)
            conn.sendall(head + body + b"\r\n")
        if close:
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, name="test-silent", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/cam.mjpg"
    finally:
        srv.close()
        for conn in held:
            conn.close()


@pytest.fixture(autouse=True, scope="module")
def _ffmpeg_lines() -> Iterator[None]:
    """Reasons need FFmpeg's lines; given back after this module (other modules check what
    OpenCV prints on stderr by itself)."""
    assert ffmpeg_log.install()
    yield
    ffmpeg_log.uninstall()


def timed(fn: object) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()  # type: ignore[operator]
    except CaptureError as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


@pytest.mark.parametrize("backend_timeouts", [True, False], ids=["ffmpeg", "backstop"])
def test_open_of_a_silent_server_fails_within_the_bound(backend_timeouts: bool) -> None:
    with tcp_server(None) as url:
        cap = GuardedCapture(url, open_timeout_s=TIMEOUT_S, backend_timeouts=backend_timeouts)
        took, exc = timed(cap.open)
        cap.close()
    assert took <= BOUND_S
    assert isinstance(exc, CaptureTimeout) and exc.waited_for == "open" and url in str(exc)
    assert "timed out" in str(exc) and exc.reason == "no answer within 1 s"
    # FFmpeg's interrupt callback ends it first (the worker survives); else the thread deadline.
    assert cap.abandoned_total == (0 if backend_timeouts else 1)


@pytest.mark.parametrize("backend_timeouts", [True, False], ids=["ffmpeg", "backstop"])
def test_frames_then_silence_gives_frames_then_a_read_failure(backend_timeouts: bool) -> None:
    with tcp_server(5) as url:
        cap = GuardedCapture(
            url, open_timeout_s=3, read_timeout_s=TIMEOUT_S, backend_timeouts=backend_timeouts
        )
        cap.open()
        assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 160
        shapes = [cap.read().shape for _ in range(4)]  # the demuxer may hold the 5th back
        took, exc = timed(lambda: [cap.read() for _ in range(3)])
        assert shapes == [(120, 160, 3)] * 4
        assert took <= BOUND_S + 0.5  # the 5th frame may come first
        assert isinstance(exc, CaptureTimeout) and exc.waited_for == "read" and not cap.is_open
        assert exc.reason == "no answer within 1 s", exc
        assert cap.abandoned_total == (0 if backend_timeouts else 1)
        with pytest.raises(CaptureError, match="not open"):
            cap.read()
        cap.open()  # a fresh capture object on the same server
        assert cap.read().shape == (120, 160, 3)
        cap.close()


def test_close_during_a_stalled_read_returns_at_once_and_frees_the_reader() -> None:
    with tcp_server(3) as url:
        cap = GuardedCapture(url, read_timeout_s=30, backend_timeouts=False)
        cap.open()
        errors: list[BaseException] = []

        def drain() -> None:
            try:
                while True:
                    cap.read()
            except CaptureError as exc:
                errors.append(exc)

        reader = threading.Thread(target=drain)
        reader.start()
        time.sleep(0.5)  # the reader is now stuck in FFmpeg
        took, _ = timed(cap.close)
        reader.join(BOUND_S)
        assert took <= cap.close_timeout_s + 0.2
        assert not reader.is_alive() and "closed" in str(errors[0])
        assert cap.stuck_workers == 1


def test_stuck_workers_are_capped_and_counted() -> None:
    with tcp_server(None) as url:
        cap = GuardedCapture(url, open_timeout_s=0.3, backend_timeouts=False, max_stuck=2)
        before = threading.active_count()
        for _ in range(2):
            with pytest.raises(CaptureTimeout):
                cap.open()
        with pytest.raises(CaptureError, match="still stuck"):
            cap.open()
        assert cap.stuck_workers == 2 and cap.abandoned_total == 2
        assert threading.active_count() - before <= 2
    # The server closed its sockets: the stuck opens return, release and exit on their own.
    assert wait_for_stuck(40) == 0 and cap.stuck_workers == 0


def test_refused_open_is_a_capture_error_not_a_timeout() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cap = GuardedCapture(f"http://127.0.0.1:{port}/x", open_timeout_s=TIMEOUT_S)
    took, exc = timed(cap.open)
    assert took < TIMEOUT_S and type(exc) is CaptureError and "could not open" in str(exc)
    assert exc.reason == "connection refused" and str(exc).endswith(": connection refused")
    assert cap.last_backend_line and "Connection refused" in cap.last_backend_line


@pytest.fixture(scope="module")
def mjpeg_camera() -> Iterator[MjpegCamera]:
    with MjpegCamera(auth=("user", "pass")) as cam:
        yield cam


@pytest.fixture(scope="module")
def rtsp_camera() -> Iterator[RtspCamera]:
    if why := rtsp_available():
        pytest.skip(why)
    with RtspCamera() as cam:
        yield cam


@pytest.mark.parametrize(
    ("which", "path", "words"),
    [
        ("rtsp", "/nope", "not found (RTSP 404)"),
        ("mjpeg", "/nope", "not found (HTTP 404)"),
        ("mjpeg", None, "not authorised (HTTP 401: wrong user or password?)"),
    ],
)
def test_a_refusing_camera_gives_its_reason(
    request: pytest.FixtureRequest, which: str, path: str | None, words: str
) -> None:
    cam = request.getfixturevalue(f"{which}_camera")
    cap = GuardedCapture(cam.url_for(path) if path else cam.url, open_timeout_s=5)
    took, exc = timed(cap.open)
    assert took < 5 and type(exc) is CaptureError and exc.reason == words, exc


@pytest.mark.parametrize("camera", [RtspCamera, MjpegCamera], ids=["rtsp", "mjpeg"])
def test_a_killed_camera_ended_its_stream_and_then_refuses(camera: type[RtspCamera]) -> None:
    if camera is RtspCamera and (why := rtsp_available()):
        pytest.skip(why)
    with camera() as cam:
        cap = GuardedCapture(cam.url, open_timeout_s=5, read_timeout_s=2)
        cap.open()
        for _ in range(3):
            cap.read()
        cam.kill()
        with pytest.raises(CaptureError) as ended:
            for _ in range(100):  # what the backend buffered comes out first
                cap.read()
        took, refused = timed(cap.open)
    assert ended.value.reason == "stream ended", (ended.value, cap.last_backend_line)
    assert isinstance(refused, CaptureError) and refused.reason == "connection refused"
    assert took < 1 and cap.last_backend_line and "Connection refused" in cap.last_backend_line


def test_a_stream_of_undecodable_parts_names_the_codec() -> None:
    with tcp_server(40, garbage=True, close=True) as url:
        cap = GuardedCapture(url, open_timeout_s=5, read_timeout_s=TIMEOUT_S)
        try:
            cap.open()  # FFmpeg probes the whole short stream and opens it anyway
            _took, exc = timed(cap.read)
        except CaptureError as exc_open:  # or gives up while probing: the same words
            exc = exc_open
    assert isinstance(exc, CaptureError), exc
    assert exc.reason == "stream opened but no frame could be decoded (unsupported codec?)", exc


def test_frames_then_a_closed_connection_is_a_stream_that_ended() -> None:
    with tcp_server(3, close=True) as url:
        cap = GuardedCapture(url, open_timeout_s=5, read_timeout_s=TIMEOUT_S)
        cap.open()
        with pytest.raises(CaptureError) as info:
            for _ in range(10):
                cap.read()
    assert info.value.reason == "stream ended" and not isinstance(info.value, CaptureTimeout)


def test_bad_arguments_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"timeouts must be > 0 s.*read -1"):
        GuardedCapture("x", read_timeout_s=-1)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[ WARN:0@1.009] global cap.cpp:212 open VIDEOIO(FFMPEG): backend ...", "opencv"),
        ("[ERROR:0@0.100] global foo", "opencv"),
        ("[http @ 0x5575a68f6500] Error reading HTTP response: Connection timed out", "ffmpeg"),
        ("[tcp @ 0x55] Connection to tcp://127.0.0.1:1 failed: Connection refused", "ffmpeg"),
        ("[OPENCV:FFMPEG:24] HTTP error 404 Not Found", "ffmpeg"),
        ("2026-12-02 06:00:00 WARNING edge_agent.sources: [ WARN in text", None),
        ("Traceback (most recent call last):", None),
    ],
)
def test_classify(line: str, kind: str | None) -> None:
    assert classify(line) == kind


ROUTED = """
import logging, socket, sys, threading
logging.basicConfig(level=logging.{level}, format="PY %(levelname)s %(name)s: %(message)s")
from edge_agent.backend_logs import BackendLogRouter
router = BackendLogRouter()
router.start()
import cv2

def rtsp_camera(srv):  # answers every request 404 (path /missing) or 401
    while True:
        conn, _ = srv.accept()
        head = conn.recv(65536).decode().split("\\r\\n")
        cseq = next(ln.split(":")[1].strip() for ln in head if ln.lower().startswith("cseq"))
        status = "404 Not Found" if "/missing" in head[0] else "401 Unauthorized"
        conn.sendall(f"RTSP/1.0 {{status}}\\r\\nCSeq: {{cseq}}\\r\\n\\r\\n".encode())
        conn.close()

rtsp = socket.socket(); rtsp.bind(("127.0.0.1", 0)); rtsp.listen(4)
threading.Thread(target=rtsp_camera, args=(rtsp,), daemon=True).start()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cam = f"rtsp://127.0.0.1:{{rtsp.getsockname()[1]}}"
for url in (f"http://127.0.0.1:{{port}}/x", cam + "/missing", cam + "/secret"):
    cv2.VideoCapture(url, cv2.CAP_FFMPEG)
logging.getLogger("app").info("still here")
print("plain python stderr", file=sys.stderr)
router.close()
"""


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_backend_lines_leave_stderr_and_reach_our_log_at_debug(level: str) -> None:
    code = textwrap.dedent(ROUTED.format(level=level))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=ENV,
    )
    lines = proc.stderr.splitlines()
    assert not [ln for ln in lines if classify(ln)], proc.stderr  # nothing raw from C
    assert "PY INFO app: still here" in lines and "plain python stderr" in lines
    routed = [ln for ln in lines if ln.startswith("PY DEBUG edge_agent.backend.")]
    if level == "INFO":
        assert routed == []
    else:
        for reason in ("Connection refused", "404 (Not Found)", "401 (Unauthorized)"):
            assert any(".ffmpeg: [" in ln and reason in ln for ln in routed), (reason, routed)
        assert any("opencv: [ WARN:" in ln for ln in routed)


EXIT_WHILE_STUCK = """
import logging, os, socket, sys
from edge_agent import ffmpeg_log
from edge_agent.capture_guard import CaptureTimeout, GuardedCapture, wait_for_stuck
if {callback}:
    assert ffmpeg_log.install()
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cap = GuardedCapture(f"http://127.0.0.1:{{srv.getsockname()[1]}}/", open_timeout_s=0.3,
                     backend_timeouts=False)
try:
    cap.open()
except CaptureTimeout:
    pass
if {use_exit} and wait_for_stuck(0.1):
    logging.shutdown()
    os._exit(3)
"""


@pytest.mark.parametrize(
    ("use_exit", "callback"),
    [(False, False), (True, False), (True, True)],
    ids=["plain-exit", "os-exit", "os-exit-with-ffmpeg-callback"],
)
def test_exit_with_a_stuck_worker_needs_os_exit(use_exit: bool, callback: bool) -> None:
    """Documents why wait_for_stuck exists: a plain exit while a worker is in FFmpeg aborts.
    With FFmpeg's log callback installed, os._exit still ends the process cleanly."""
    code = textwrap.dedent(EXIT_WHILE_STUCK.format(use_exit=use_exit, callback=callback))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, env=ENV)
    if use_exit:
        assert proc.returncode == 3
    else:  # the worker returns as the listening socket closes at exit, mid-finalisation
        assert proc.returncode != 0, "a plain exit no longer aborts: wait_for_stuck may go"


def test_a_job_failed_by_close_before_it_ran_is_skipped_by_its_worker() -> None:
    """close() fails the job in flight for its caller; the worker, reaching it later, skips
    it instead of dying on the future's state (a race seen with a restarting RTSP camera)."""
    from edge_agent.capture_worker import Worker, settle

    errors: list[BaseException] = []
    hook, threading.excepthook = threading.excepthook, lambda a: errors.append(a.exc_value)
    try:
        ran: list[int] = []
        worker = Worker("capture-test", on_exit=lambda _w: None)
        fut = worker.submit(lambda _w: ran.append(1))
        settle(fut, exc=CaptureError("closed while waiting"))  # before the thread takes it
        later = worker.submit(lambda _w: ran.append(2))
        worker.thread.start()
        assert later.result(5) is None
        worker.abandon()
        worker.thread.join(5)
    finally:
        threading.excepthook = hook
    assert ran == [2] and errors == []
    assert isinstance(fut.exception(), CaptureError)
