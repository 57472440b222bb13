"""OpenCV's and FFmpeg's own messages into Python logging at DEBUG, never raw on stderr.

Both libraries write straight to file descriptor 2 from C, and neither offers a Python hook.
Measured here (OpenCV 5.0.0, libavformat 62; docs/capture-guard.md): `cv2.setLogLevel` no longer
exists; `cv2.utils.logging.setLogLevel` silences OpenCV's "[ WARN:0@...]" lines only;
OPENCV_LOG_LEVEL works only if set before `import cv2`; OPENCV_FFMPEG_LOGLEVEL is read once, at
the first FFmpeg capture. All of them *discard* the lines, and those lines are the only place
the reason for a failure is given ("Connection refused", "404 Not Found", "401 Unauthorized").
So the router below takes fd 2 over with a pipe, logs the backends' lines at DEBUG under
`edge_agent.backend.opencv` / `.ffmpeg`, and passes every other byte through to the real stderr.
Python's own stderr (sys.stderr, logging handlers on it, faulthandler) is pointed at the real
stderr directly, so a crash traceback never depends on the reader thread.

FFmpeg's lines no longer need the router: edge_agent.ffmpeg_log takes them through FFmpeg's
log callback, per capture thread. OpenCV's own logger has no hook in its Python binding, so its
"[ WARN:0@...]" lines still come through fd 2. `quiet_backends()` sets up both.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import sys
import threading
from typing import TextIO

from edge_agent import ffmpeg_log

LOGGER = "edge_agent.backend"
#: "[ WARN:0@1.009] global cap.cpp:212 ..." and "[ERROR:0@0.1] ...": OpenCV's logger.
OPENCV_LINE = re.compile(r"^\[ ?(?:FATAL|ERROR|WARN|INFO|DEBUG|VERBOSE)[:\] ]")
#: FFmpeg's av_log through FFmpeg's own callback (stderr, unbuffered): "[http @ 0x5575a68f6500]
#: Error reading HTTP response: ...". Setting OPENCV_FFMPEG_LOGLEVEL swaps in OpenCV's callback,
#: which printf()s "[OPENCV:FFMPEG:24] HTTP error 404 Not Found" to *stdout* (libc-buffered
#: when stdout is not a terminal, so late), without the context; recognised, but leave it unset.
FFMPEG_LINE = re.compile(r"^\[(?:[\w./ -]+ @ (?:0x)?[0-9a-fA-F]+|OPENCV:FFMPEG:-?\d+)\] ")
READ_CHUNK_BYTES = 65536
#: A line longer than this is handed on in pieces rather than held (a binary dump, say).
MAX_LINE_BYTES = 8192
JOIN_TIMEOUT_S = 2.0

_router_lock = threading.Lock()
_router: BackendLogRouter | None = None


def classify(line: str) -> str | None:
    """ "opencv", "ffmpeg", or None for a line that is not a backend's."""
    if OPENCV_LINE.match(line):
        return "opencv"
    if FFMPEG_LINE.match(line):
        return "ffmpeg"
    return None


class BackendLogRouter:
    """Owns fd 2 between start() and close(); one per process (fd 2 is the process's)."""

    def __init__(self, logger_name: str = LOGGER) -> None:
        self._loggers = {k: logging.getLogger(f"{logger_name}.{k}") for k in ("opencv", "ffmpeg")}
        self._real_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stream: TextIO | None = None
        self._saved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
        self._old_stderr: TextIO | None = None
        self.lines_routed = 0

    @property
    def real_stderr(self) -> TextIO | None:
        """The process's stderr as it was before start() (None when not started)."""
        return self._stream

    def start(self) -> None:
        """Take fd 2 over (early: lines written before it go to the real stderr)."""
        if self._thread is not None:
            return
        sys.stderr.flush()
        self._real_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        # Like Python's own stderr: line-buffered, so a print() from one thread reaches the fd
        # as one write and is not split by a routed line from the reader thread.
        self._stream = os.fdopen(
            os.dup(self._real_fd), "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        self._repoint_python()
        self._thread = threading.Thread(
            target=self._pump, args=(read_fd,), name="backend-logs", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Give fd 2 back; the reader sees end of file, hands on the rest and stops."""
        if self._thread is None or self._real_fd is None:
            return
        os.dup2(self._real_fd, 2)  # drops the pipe's last write end (children may hold others)
        self._thread.join(JOIN_TIMEOUT_S)
        self._restore_python()
        os.close(self._real_fd)
        if self._stream is not None:
            self._stream.close()
        self._thread = self._real_fd = self._stream = None

    def __enter__(self) -> BackendLogRouter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _repoint_python(self) -> None:
        assert self._stream is not None
        self._old_stderr = sys.stderr
        for handler in _stream_handlers():
            if handler.stream is sys.stderr or handler.stream is sys.__stderr__:
                self._saved.append((handler, handler.stream))
                handler.setStream(self._stream)
        sys.stderr = self._stream
        if faulthandler.is_enabled():
            faulthandler.enable(self._stream)

    def _restore_python(self) -> None:
        for handler, stream in self._saved:
            if handler.stream is self._stream:
                handler.setStream(stream)
        self._saved.clear()
        if sys.stderr is self._stream and self._old_stderr is not None:
            sys.stderr = self._old_stderr
        if faulthandler.is_enabled():
            faulthandler.enable(sys.stderr)

    def _pump(self, read_fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read_fd, READ_CHUNK_BYTES):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._route(raw + b"\n")
                if len(pending) > MAX_LINE_BYTES:
                    self._route(pending)
                    pending = b""
            if pending:
                self._route(pending)
        finally:
            os.close(read_fd)

    def _route(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
        kind = classify(text)
        if kind is None:
            if self._real_fd is not None:
                os.write(self._real_fd, raw)  # not ours to judge: pass it through unchanged
            return
        self.lines_routed += 1
        self._loggers[kind].debug("%s", text)


def _stream_handlers() -> list[logging.StreamHandler[TextIO]]:
    """StreamHandlers on every known logger (the root's first), whose stream may be stderr."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def quiet_backends() -> BackendLogRouter:
    """Call once logging is configured, and again after every reconfigure: no OpenCV or FFmpeg
    line reaches stderr raw; they are logged at DEBUG on edge_agent.backend.opencv / .ffmpeg.

    Starts the process's fd-2 router (once), sets OpenCV's log level (WARNING when
    edge_agent.backend logs DEBUG, else ERROR: fewer lines to route and drop) and installs the
    FFmpeg log callback (edge_agent.ffmpeg_log). Only for the agent's own process: it takes fd 2,
    which a test runner owns. Returns the router (close() gives fd 2 back)."""
    global _router
    with _router_lock:
        if _router is None:
            _router = BackendLogRouter()
            _router.start()
        router = _router
    debug = logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG)
    try:
        import cv2

        cv_log = cv2.utils.logging
        cv_log.setLogLevel(cv_log.LOG_LEVEL_WARNING if debug else cv_log.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError) as exc:  # an OpenCV without it: the router copes
        logging.getLogger(LOGGER).debug("OpenCV's log level not set: %s", exc)
    if not ffmpeg_log.install():
        logging.getLogger(LOGGER).debug("FFmpeg's lines stay with the fd-2 router")
    return router
