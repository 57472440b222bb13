"""quiet_backends() in an agent-like process (a subprocess: it takes fd 2, which pytest owns)
against the real test cameras: at INFO no OpenCV or FFmpeg line reaches stderr while ours do,
with the reasons in words; at DEBUG the backends' lines are in our log, as ours."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.backend_logs import classify
from tests.helpers.mjpeg_server import MjpegCamera
from tests.helpers.rtsp_server import RtspCamera, free_port, rtsp_available

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

AGENT = """
import logging, sys
from edge_agent.logsetup import configure_logging
from edge_agent.backend_logs import quiet_backends
configure_logging(sys.argv[1])
quiet_backends()
from edge_agent.capture_guard import CaptureError, GuardedCapture
log = logging.getLogger("edge_agent.sources")
for url in sys.argv[2:]:
    cap = GuardedCapture(url, open_timeout_s=5)
    try:
        cap.open()
    except CaptureError as exc:
        log.warning("camera %s failed: %s", url, exc.reason)
print("plain python stderr", file=sys.stderr)
"""


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    with MjpegCamera() as mjpeg:
        found = {"http404": mjpeg.url_for("/nope"), "refused": f"http://127.0.0.1:{free_port()}/"}
        if rtsp_available():
            yield found
            return
        with RtspCamera() as rtsp:
            yield {**found, "rtsp404": rtsp.url_for("/nope")}


def run_agent(level: str, urls: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AGENT), level, *urls.values()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=ENV,
    )
    assert proc.stdout == "", proc.stdout  # OpenCV's replacement callback would print here
    return proc.stderr.splitlines()


WORDS = {
    "http404": "not found (HTTP 404)",
    "refused": "connection refused",
    "rtsp404": "not found (RTSP 404)",
}
BACKEND_SAYS = {
    "http404": "HTTP error 404",
    "refused": "Connection refused",
    "rtsp404": "method DESCRIBE failed: 404",
}


def test_at_info_no_backend_line_reaches_stderr_and_the_reasons_do(urls: dict[str, str]) -> None:
    lines = run_agent("INFO", urls)
    assert not [ln for ln in lines if classify(ln) or "edge_agent.backend" in ln], lines
    assert not [ln for ln in lines if any(s in ln for s in BACKEND_SAYS.values())], lines
    assert "plain python stderr" in lines
    for name, url in urls.items():
        assert any(f"camera {url} failed: {WORDS[name]}" in ln for ln in lines), (name, lines)


def test_at_debug_the_backend_lines_are_ours(urls: dict[str, str]) -> None:
    lines = run_agent("DEBUG", urls)
    assert not [ln for ln in lines if classify(ln)], lines  # nothing raw from C
    for name in urls:
        ours = [ln for ln in lines if " DEBUG   edge_agent.backend.ffmpeg: [" in ln]
        assert any(BACKEND_SAYS[name] in ln for ln in ours), (name, lines)
    assert any("edge_agent.backend.opencv: [ WARN:" in ln for ln in lines), lines
