"""Each source opens and gives one frame within the timeout, through the agent's own source
classes (sources.py), so doctor sees what ``run`` would see."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from edge_agent.capture_guard import DEFAULT_CLOSE_TIMEOUT_S
from edge_agent.config import ConfigIssue, SourceConfig
from edge_agent.doctor.checks import Check
from edge_agent.health.source_state import SourceStates
from edge_agent.health.stats import StatsRegistry
from edge_agent.publish.paho_support import probe
from edge_agent.sources import SourceError, open_source, redact, resolve_kind
from edge_agent.types import Frame

#: How long a source that gave no frame may take to close after ``stop``: a live source's
#: blocked call is abandoned by its capture guard (capture_guard.py) within its close timeout.
STOP_WAIT_S = DEFAULT_CLOSE_TIMEOUT_S + 1.0
#: Name prefix of the reader threads; the CLI looks for ones still alive at exit.
THREAD_PREFIX = "doctor-source-"
#: The port a stream URL without one uses, by scheme.
STREAM_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
CAMERA_ADVICE = (
    "check that the camera is plugged in and seen by the kernel (ls /dev/video*; a Pi camera "
    "module: rpicam-hello --list-cameras), that the agent's user is in the video group, and "
    "that no other program holds it"
)
STREAM_ADVICE = (
    "open the same URL with ffplay or VLC from this device: check the address, the path, the "
    "user and password, and that the camera allows one more client"
)
FILE_ADVICE = "fix the source's uri: it must name a video file or a folder of images"


def _device_missing(cfg: SourceConfig) -> str | None:
    """Why a local camera cannot be there at all (no such /dev node), else None: the source
    classes retry a missing camera forever, which would only show as a timeout."""
    uri = str(cfg.uri).strip()
    if not sys.platform.startswith("linux"):
        return None
    node = Path(f"/dev/video{uri}") if uri.isdigit() else Path(uri)
    if str(node).startswith("/dev/") and not node.exists():
        return f"no such device: {node}"
    return None


def _stream_probe(uri: str) -> str | None:
    """Why a stream's host does not answer, in words (OpenCV says only that it failed); None
    when TCP connects (then the path, the login or the codec is wrong) or there is no host."""
    parts = urlsplit(uri)
    try:
        port = parts.port or STREAM_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    reason = probe(parts.hostname, port)
    return None if reason.startswith("TCP connects") else reason


def _first_frame(
    cfg: SourceConfig, stop: threading.Event, out: queue.Queue[object], states: SourceStates
) -> None:
    """Open the source and put its first Frame, an exception, or None (no frame) on ``out``,
    once the source is closed: a capture released while Python exits aborts the process."""
    got: object = None
    try:
        source = open_source(cfg, stop, StatsRegistry().source(cfg.id), states)
    except SourceError as exc:
        out.put(exc)
        return
    try:
        got = next(iter(source.frames()), None)
    except Exception as exc:  # OpenCV errors from a broken device or file
        got = exc
    finally:
        source.close()
    out.put(got)


def check_source(cfg: SourceConfig, timeout_s: float, missing: Sequence[ConfigIssue] = ()) -> Check:
    """The source opens and gives a frame within ``timeout_s``. The read runs in a daemon
    thread: OpenCV's read on a camera has no timeout of its own and cannot be interrupted."""
    name = f"source {cfg.id}"
    kind = resolve_kind(cfg)
    where = f"{kind} {redact(str(cfg.uri))}"
    advice = {"camera": CAMERA_ADVICE, "stream": STREAM_ADVICE}.get(kind, FILE_ADVICE)
    if missing:  # the file or folder the config names (config/files.py said why)
        return Check(name, "fail", "; ".join(str(i) for i in missing), advice)
    if kind == "camera":
        absent = _device_missing(cfg)
        if absent:
            return Check(name, "fail", f"{where}: {absent}", advice)
    stop = threading.Event()
    out: queue.Queue[object] = queue.Queue()
    states = SourceStates()  # the live source's reason for failing, in words
    started = time.monotonic()
    thread = threading.Thread(
        target=_first_frame,
        args=(cfg, stop, out, states),
        name=f"{THREAD_PREFIX}{cfg.id}",
        daemon=True,
    )
    thread.start()
    try:
        got = out.get(timeout=timeout_s)
    except queue.Empty:
        stop.set()  # a live source notices at once; its guard abandons a blocked call
        thread.join(STOP_WAIT_S)
        status = states.get(cfg.id)
        reason = status.reason if status is not None else None
        found = f"{where}: no frame within {timeout_s:g} s"
        if reason:  # the backend's own words: refused, 404, 401, no answer
            found += f" ({reason})"
        elif kind == "stream" and (why := _stream_probe(str(cfg.uri))):
            found += f"; TCP: {why}"
        return Check(name, "fail", found, advice)
    took = time.monotonic() - started
    thread.join()  # it has put its answer: only returning is left
    if isinstance(got, Frame):
        h, w = got.image.shape[:2]
        return Check(name, "ok", f"{where}: a {w}x{h} frame in {took:.2f} s")
    if got is None:
        return Check(name, "fail", f"{where}: opened but gave no frame (empty?)", advice)
    return Check(name, "fail", f"{where}: {got}", advice)
