"""FFmpeg's log lines into Python logging, and into the capture that caused them.

FFmpeg gives the reason for a failed open or read only in its log ("method DESCRIBE failed: 404
(Not Found)", "HTTP error 401 Unauthorized", "Connection refused"), and OpenCV throws that away
(docs/capture-guard.md). libavutil's av_log_set_callback lets us take every line: we format it
with av_log_format_line2, log it at DEBUG on `edge_agent.backend.ffmpeg`, and hand it to a
collector of the thread that logged it. FFmpeg calls the callback synchronously in the thread
that called into it, so the capture worker that runs open()/read() under `collect()` gets its
own lines and no other camera's. Lines from FFmpeg's own threads (decoder threads) and from
threads without a collector go to the log only.

libavutil is whatever OpenCV loaded: opencv-python's bundled copy
(opencv_python.libs/libavutil-*.so) or the system one (a Pi with apt's OpenCV). We find it in
/proc/self/maps after the first FFmpeg capture, else through ctypes.util.find_library.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = "edge_agent.backend.ffmpeg"
#: libavutil/log.h: AV_LOG_ERROR 16, AV_LOG_WARNING 24, AV_LOG_INFO 32, AV_LOG_VERBOSE 40. At
#: WARNING the http 404/401 lines arrive (FFmpeg logs them as warnings); VERBOSE adds the
#: decoder's "Reinit context to WxH" when a stream changes its frame size, which OpenCV hides
#: (capture_guard.reinit_line). Measured: ~25 lines per RTSP open, none per frame after.
AV_LOG_WARNING = 24
AV_LOG_VERBOSE = 40
#: A formatted line longer than this is cut (FFmpeg's own default callback uses 1024).
LINE_BYTES = 1024
#: A collector keeps at most this many lines (the last ones): a read that logs a decode error
#: per packet must not grow a list without bound.
MAX_COLLECTED = 64
MAPS = Path("/proc/self/maps")

log = logging.getLogger(LOGGER)

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_installed = False
_unavailable = False  # install() failed once: a retry would fail the same way
_atexit_registered = False
_level = AV_LOG_WARNING
_level_before: int | None = None  # FFmpeg's level before install(), which uninstall() restores
#: Lines at this level or more severe also go raw to fd 2, as FFmpeg's default callback would
#: print them (install(keep_stderr=True)); None once the process asked for quiet backends.
_stderr_level: int | None = None
#: threading.get_ident() -> that thread's collecting list (see collect()).
_collectors: dict[int, list[str]] = {}
#: Per thread: FFmpeg's print_prefix flag and a line not yet ended by "\n" (FFmpeg may log one
#: line in several calls). A foreign (FFmpeg-made) thread gets a fresh one each call: harmless.
_partial = threading.local()


def _on_log(avcl: int | None, level: int, fmt: bytes | None, vl: int | None) -> None:
    """The C callback. It must never raise: an exception here would be printed raw on stderr
    by ctypes, the very thing this module exists to stop."""
    try:
        if level > _level or fmt is None or _lib is None:
            return
        buf = ctypes.create_string_buffer(LINE_BYTES)
        prefix = ctypes.c_int(getattr(_partial, "prefix", 1))
        _lib.av_log_format_line2(avcl, level, fmt, vl, buf, LINE_BYTES, ctypes.byref(prefix))
        _partial.prefix = prefix.value
        text = getattr(_partial, "text", "") + buf.value.decode("utf-8", "backslashreplace")
        if not text.endswith("\n") and len(text) < LINE_BYTES:
            _partial.text = text
            return
        _partial.text = ""
        _emit(text.rstrip("\r\n"), level)
    except BaseException:  # see the docstring
        pass


def _emit(text: str, level: int) -> None:
    """One formatted message (FFmpeg sometimes puts two lines in one) to the log and to the
    calling thread's collector (and to fd 2 when stderr is kept)."""
    if _stderr_level is not None and level <= _stderr_level:
        os.write(2, text.encode("utf-8", "backslashreplace") + b"\n")
    lines = _collectors.get(threading.get_ident())
    for line in text.splitlines():
        if not line.strip():
            continue
        if lines is not None:
            lines.append(line)
            del lines[:-MAX_COLLECTED]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", line)


#: Kept for the life of the process: FFmpeg holds a raw pointer to it, and a thread inside
#: av_log while uninstall() runs may still call it.
_c_callback = _CALLBACK(_on_log)


def find_libavutil() -> str | None:
    """The path of the libavutil mapped in this process, else the system's, else None."""
    try:
        for line in MAPS.read_text().splitlines():
            path = line.split(maxsplit=5)[-1]
            if "libavutil" in Path(path).name:
                return path
    except OSError:
        pass
    return ctypes.util.find_library("avutil")


def _load() -> ctypes.CDLL | None:
    path = find_libavutil()
    if path is None:
        log.debug("FFmpeg log callback not installed: no libavutil in this process or system")
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.av_log_set_callback.argtypes = [ctypes.c_void_p]
        lib.av_log_set_callback.restype = None
        lib.av_log_set_level.argtypes = [ctypes.c_int]
        lib.av_log_set_level.restype = None
        lib.av_log_get_level.restype = ctypes.c_int
        lib.av_log_format_line2.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
            ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
        ]  # fmt: skip
        lib.av_log_format_line2.restype = ctypes.c_int
        lib.av_log_default_callback  # noqa: B018 - present, or AttributeError now
    except (OSError, AttributeError) as exc:
        log.debug("FFmpeg log callback not installed: %s unusable (%s)", path, exc)
        return None
    return lib


def _register_opencv_ffmpeg() -> None:
    """OpenCV sets FFmpeg's log level (and maybe its own callback) once, at its first FFmpeg
    capture; make that happen now so it cannot undo ours later. Also maps libavutil."""
    try:
        import cv2

        cv2.VideoCapture("/nonexistent/edge-agent-ffmpeg-init.mp4", cv2.CAP_FFMPEG).release()
    except Exception as exc:  # no cv2 or no FFmpeg backend: find_libavutil says what is left
        log.debug("could not make OpenCV register FFmpeg: %s", exc)


def install(level: int = AV_LOG_VERBOSE, *, keep_stderr: bool = False) -> bool:
    """Route FFmpeg's lines at `level` and more severe through our callback; idempotent and
    thread-safe. False (with a DEBUG line) when libavutil or its symbols cannot be found:
    logs never stop the agent.

    keep_stderr: also write to fd 2 what FFmpeg would have printed there by itself (lines at
    its level before install), for a process that did not ask for quiet backends; the capture
    guard installs it so. A later install() without it makes the process quiet for good."""
    global _lib, _installed, _level, _atexit_registered, _unavailable, _level_before
    global _stderr_level
    with _lock:
        if _installed:
            if not keep_stderr:
                _stderr_level = None
            return True
        if _unavailable:
            return False
        _register_opencv_ffmpeg()
        lib = _lib or _load()
        if lib is None:
            _unavailable = True
            return False
        _lib, _level, _level_before = lib, level, lib.av_log_get_level()
        _stderr_level = _level_before if keep_stderr else None
        lib.av_log_set_callback(ctypes.cast(_c_callback, ctypes.c_void_p))
        lib.av_log_set_level(level)
        _installed = True
        if not _atexit_registered:
            # atexit runs before the interpreter starts finalising: a stuck worker or an FFmpeg
            # thread that logs after that must not enter Python (capture_guard.wait_for_stuck).
            atexit.register(uninstall)
            _atexit_registered = True
        return True


def uninstall() -> None:
    """Give FFmpeg its default callback (stderr) and level back; for tests and at exit."""
    global _installed, _stderr_level
    with _lock:
        _stderr_level = None
        if not _installed or _lib is None:
            return
        default = ctypes.cast(_lib.av_log_default_callback, ctypes.c_void_p)
        _lib.av_log_set_callback(default)
        if _level_before is not None:
            _lib.av_log_set_level(_level_before)
        _installed = False


def installed() -> bool:
    return _installed


@contextmanager
def collect(into: list[str] | None = None) -> Iterator[list[str]]:
    """The FFmpeg lines this thread logs inside the block (the last MAX_COLLECTED), appended
    to `into` (a new list by default; another thread may read it meanwhile). Blocks nest; the
    outer collector has the lines again when the inner block ends. Nothing is collected when
    install() has not run or failed."""
    ident = threading.get_ident()
    outer = _collectors.get(ident)
    lines: list[str] = [] if into is None else into
    _collectors[ident] = lines
    try:
        yield lines
    finally:
        if outer is None:
            _collectors.pop(ident, None)
        else:
            _collectors[ident] = outer
