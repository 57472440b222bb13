"""FFmpeg's log callback (edge_agent.ffmpeg_log) and the words made of its lines
(edge_agent.capture_reason), against the real test cameras and real OpenCV/FFmpeg. The callback
is installed in this process (it does not touch fd 2, which pytest owns)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import cv2
import pytest

from edge_agent import ffmpeg_log
from edge_agent.capture_reason import reason
from tests.helpers.mjpeg_server import MjpegCamera
from tests.helpers.rtsp_server import RtspCamera, free_port, rtsp_available

PARAMS = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000]
CODEC = "stream opened but no frame could be decoded (unsupported codec?)"

#: Lines FFmpeg logged here (libavformat 62) and the words they must give; the last column is
#: the call that failed.
REAL_LINES = [
    ("[rtsp @ 0x7f6794001600] method DESCRIBE failed: 404 (Not Found)", "not found (RTSP 404)"),
    ("[rtsp @ 0x7f67] method DESCRIBE failed: 401 (Unauthorized)",
     "not authorised (RTSP 401: wrong user or password?)"),
    ("[http @ 0x7f67940019c0] HTTP error 404 no stream at /nope; try /stream.mjpg",
     "not found (HTTP 404)"),
    ("[http @ 0x7f6794002280] HTTP error 401 Unauthorized",
     "not authorised (HTTP 401: wrong user or password?)"),
    ("[http @ 0x55] HTTP error 503 Service Unavailable", "camera server error (HTTP 503)"),
    ("[tcp @ 0x7f6794000a40] Connection to tcp://127.0.0.1:1?timeout=0 failed: "
     "Connection refused", "connection refused"),
    ("[tcp @ 0x7f67940031c0] Failed to resolve hostname nosuchhost.invalid: Name or service "
     "not known", "host not found"),
    ("[http @ 0x7f6794002fc0] Error reading HTTP response: Immediate exit requested",
     "no answer within 5 s"),
    ("[mjpeg @ 0x7ffa94006400] No JPEG data found in image", CODEC),
    ("[mjpeg @ 0x7ffa98006400] huffman table decode error", CODEC),
    ("[mpjpeg @ 0x7ffa94001600] Could not find codec parameters for stream 0 (Video: mjpeg)",
     CODEC),
    ("[http @ 0x7ffa90001e40] Stream ends prematurely at 3009, should be 1844674407370955161",
     "stream ended"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "words"), REAL_LINES)
def test_real_lines_give_words(line: str, words: str) -> None:
    noise = "[swscaler @ 0x7ffa] deprecated pixel format used, make sure you did set range"
    got = reason([noise, line], timed_out=False, opened=False, kind="open", timeout_s=5)
    assert got == words


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"timed_out": True, "opened": False, "kind": "open"}, "no answer within 2 s"),
        ({"timed_out": False, "opened": False, "kind": "open"},
         "the backend could not open it (no reason given)"),
        ({"timed_out": False, "opened": True, "kind": "read"}, CODEC),
        ({"timed_out": False, "opened": True, "kind": "read", "frames": 3}, "stream ended"),
    ],
)  # fmt: skip
def test_without_lines_the_flags_decide(kwargs: dict[str, object], words: str) -> None:
    assert reason([], timeout_s=2, **kwargs) == words  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    assert ffmpeg_log.install(), "libavutil not found in this process"
    yield
    ffmpeg_log.uninstall()


@pytest.fixture(scope="module")
def mjpeg() -> Iterator[MjpegCamera]:
    with MjpegCamera(auth=("user", "pass")) as cam:
        yield cam


@pytest.fixture(scope="module")
def rtsp() -> Iterator[RtspCamera]:
    if why := rtsp_available():
        pytest.skip(why)
    with RtspCamera() as cam:
        yield cam


def open_in_thread(url: str, name: str) -> tuple[bool, list[str]]:
    """cv2.VideoCapture(url) in a thread of its own under collect(): (opened, its lines)."""
    out: list[tuple[bool, list[str]]] = []

    def run() -> None:
        with ffmpeg_log.collect() as lines:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, PARAMS)
            out.append((cap.isOpened(), list(lines)))
            cap.release()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(30)
    assert out, f"{name}: open of {url} did not return within 30 s"
    return out[0]


def test_each_capture_thread_gets_its_own_lines(
    installed: None, mjpeg: MjpegCamera, rtsp: RtspCamera
) -> None:
    urls = {
        "rtsp404": rtsp.url_for("/nope"),
        "http404": mjpeg.url_for("/nope"),
        "http401": mjpeg.url,
        "refused": f"rtsp://127.0.0.1:{free_port()}/cam",
    }
    results: dict[str, tuple[bool, list[str]]] = {}
    threads = [
        threading.Thread(target=lambda n=n, u=u: results.update({n: open_in_thread(u, n)}))
        for n, u in urls.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    words = {
        name: reason(lines, timed_out=False, opened=ok, kind="open")
        for name, (ok, lines) in results.items()
    }
    assert words == {
        "rtsp404": "not found (RTSP 404)",
        "http404": "not found (HTTP 404)",
        "http401": "not authorised (HTTP 401: wrong user or password?)",
        "refused": "connection refused",
    }, results
    # Each thread's lines are about its own URL: they name no other camera's port.
    ports = {name: str(urlsplit(url).port) for name, url in urls.items()}
    for name, (_ok, lines) in results.items():
        others = {p for n, p in ports.items() if p != ports[name]}
        assert lines and not [ln for ln in lines for p in others if p in ln], (name, lines)


def test_lines_reach_our_log_at_debug_and_nothing_is_collected_outside_a_block(
    installed: None, mjpeg: MjpegCamera, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=ffmpeg_log.LOGGER):
        cv2.VideoCapture(mjpeg.url_for("/elsewhere"), cv2.CAP_FFMPEG, PARAMS).release()
    assert any("HTTP error 404" in r.getMessage() for r in caplog.records), caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert ffmpeg_log._collectors == {}


def test_install_is_idempotent_and_uninstall_gives_stderr_back(
    installed: None, mjpeg: MjpegCamera, capfd: pytest.CaptureFixture[str]
) -> None:
    assert ffmpeg_log.install() and ffmpeg_log.installed()
    ffmpeg_log.uninstall()
    try:
        _ok, lines = open_in_thread(mjpeg.url_for("/gone"), "uninstalled")
        assert lines == []
        # FFmpeg's default callback at OpenCV's level (error): http's 404 is a warning
        assert "HTTP error 404" not in capfd.readouterr().err
        _ok, lines = open_in_thread(f"http://127.0.0.1:{free_port()}/", "refused")
        assert lines == [] and "Connection refused" in capfd.readouterr().err
    finally:
        assert ffmpeg_log.install()
    _ok, lines = open_in_thread(mjpeg.url_for("/gone"), "again")
    assert any("HTTP error 404" in ln for ln in lines)


def measure(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def test_a_line_costs_little(installed: None, caplog: pytest.LogCaptureFixture) -> None:
    """Per line through the callback; printed for docs/capture-guard.md (pytest -s)."""
    lib = ffmpeg_log._lib
    assert lib is not None

    def line() -> None:
        lib.av_log(None, 24, b"%s\n", b"edge-agent cost probe")

    def below() -> None:
        lib.av_log(None, 32, b"%s\n", b"edge-agent cost probe")

    with caplog.at_level(logging.INFO, logger=ffmpeg_log.LOGGER):
        with ffmpeg_log.collect() as lines:
            quiet = measure(line, 2000)
        filtered = measure(below, 2000)
    with caplog.at_level(logging.DEBUG, logger=ffmpeg_log.LOGGER):
        logged = measure(line, 2000)
    print(f"per line: collected {quiet * 1e6:.1f} us, logged at DEBUG {logged * 1e6:.1f} us, "
          f"below the level {filtered * 1e6:.2f} us")  # fmt: skip
    assert len(lines) == ffmpeg_log.MAX_COLLECTED
    assert quiet < 1e-3 and logged < 5e-3  # generous: ~3 and ~15 us measured


def test_keep_stderr_prints_what_ffmpeg_printed_and_still_collects(
    mjpeg: MjpegCamera, capfd: pytest.CaptureFixture[str]
) -> None:
    ffmpeg_log.uninstall()
    try:
        assert ffmpeg_log.install(keep_stderr=True)
        refused = f"http://127.0.0.1:{free_port()}/"
        _ok, lines = open_in_thread(refused, "kept")
        _ok, lines_404 = open_in_thread(mjpeg.url_for("/gone"), "kept-404")
        err = capfd.readouterr().err
        assert any("Connection refused" in ln for ln in lines) and "Connection refused" in err
        # http's 404 is a warning: collected, but not printed (FFmpeg's level was error)
        assert any("HTTP error 404" in ln for ln in lines_404) and "HTTP error 404" not in err
        assert ffmpeg_log.install()  # quiet from now on
        open_in_thread(refused, "quiet")
        assert "Connection refused" not in capfd.readouterr().err
    finally:
        ffmpeg_log.uninstall()
        assert ffmpeg_log.install()
