"""The systemd unit and the sd_notify protocol, proven by running them.

No systemd runs here, so the test plays the service manager: it binds the notify socket, starts
``edge-agent run`` with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set as systemd sets them, and
reads what the agent tells. The stall is real: an MJPEG camera that goes silent mid-stream.
The unit file itself is scored by ``systemd-analyze security --offline=true``.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.health.stats import StatsRegistry
from edge_agent.health.watchdog import (
    RELOAD_GRACE_S,
    SdNotifier,
    SystemdWatchdog,
    watchdog_interval_s,
)
from tests.helpers.agent_run import agent_config, make_assets, source, write_config
from tests.helpers.models import tflite_classifier_bundle

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edge-agent.service"
AGENT = str(Path(sys.executable).parent / "edge-agent")
WAIT_S = 20.0  # longest wait for a message: generous, never asserted on
WATCHDOG_USEC = 1_000_000  # ticks every 0.5 s
MAX_EXPOSURE = 2.5


class NotifySocket:
    """The service manager's side: a datagram socket in the abstract namespace that collects
    every message, each parsed into its KEY=VALUE fields."""

    def __init__(self) -> None:
        self.address = f"@edgesight-test-{uuid.uuid4().hex[:12]}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.address[1:])
        self._sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="test-notify", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._cond:
                self.messages.append(fields)
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[dict[str, str]]], bool]) -> list[dict[str, str]]:
        with self._cond:
            ok = self._cond.wait_for(lambda: pred(self.messages), WAIT_S)
            got = list(self.messages)
        assert ok, got[-10:]
        return got

    def since(self, n: int) -> list[dict[str, str]]:
        with self._cond:
            return self.messages[n:]

    def count(self) -> int:
        with self._cond:
            return len(self.messages)

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self._thread.join()


def with_key(key: str, value: str | None = None) -> Callable[[list[dict[str, str]]], bool]:
    return lambda msgs: any(key in m and (value is None or m[key] == value) for m in msgs)


def statuses(msgs: list[dict[str, str]]) -> list[str]:
    return [m["STATUS"] for m in msgs if "STATUS" in m]


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def start(config: Path, log: Path, notify: NotifySocket, *prefix: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [*prefix, AGENT, "run", "-c", str(config)], env=env, stdout=out, stderr=out
        )


def stop(proc: subprocess.Popen[bytes], notify: NotifySocket) -> None:
    proc.send_signal(signal.SIGTERM)
    notify.wait_for(with_key("STOPPING", "1"))
    assert proc.wait(WAIT_S) == 0


# -- a camera that can go silent ---------------------------------------------------------------


class SilentCamera:
    """An MJPEG camera on 127.0.0.1 (multipart/x-mixed-replace); ``talking`` cleared, it keeps
    the connection open and sends nothing, like a hung IP camera."""

    def __init__(self) -> None:
        self.talking = threading.Event()
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                _, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
                part = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + jpg.tobytes() + b"\r\n"
                try:
                    camera.talking.wait()
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.end_headers()
                    while not camera.closed.is_set():
                        camera.talking.wait()
                        self.wfile.write(part)
                        camera.closed.wait(0.05)  # about 20 fps
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.closed = threading.Event()
        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/cam.mjpg"
        threading.Thread(target=self._httpd.serve_forever, name="test-cam", daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        self.talking.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def test_ready_after_first_result_pings_while_advancing_and_stop_on_stall(
    tmp_path: Path, broker: Any, notify: NotifySocket
) -> None:
    camera = SilentCamera()
    assets = make_assets(tmp_path / "assets")
    cam = {
        "id": "cam",
        "uri": camera.url,
        "reconnect_initial_delay_s": 0.2,
        "reconnect_max_delay_s": 0.5,
    }
    config = write_config(
        tmp_path / "agent.yaml", agent_config(assets, broker, tmp_path / "state", [cam])
    )
    proc = start(config, tmp_path / "agent.log", notify)
    try:
        # Started (model loaded, camera opening) but no frame yet: ticks, no READY, no ping.
        msgs = notify.wait_for(lambda m: sum(s.startswith("waiting") for s in statuses(m)) >= 3)
        assert not any("READY" in m or "WATCHDOG" in m for m in msgs), msgs
        camera.talking.set()
        msgs = notify.wait_for(with_key("READY", "1"))
        ready = next(i for i, m in enumerate(msgs) if "READY" in m)
        msgs = notify.wait_for(lambda m: sum("WATCHDOG" in x for x in m[ready:]) >= 3)
        assert all("WATCHDOG" not in m for m in msgs[:ready])
        running = [s for s in statuses(msgs[ready:]) if s.startswith("running, ")]
        assert running and re.match(r"running, \d+\.\d fps, \d+ results, run \w+", running[-1])
        assert any(float(s.split(", ")[1].split()[0]) > 0 for s in running)

        camera.talking.clear()  # the camera hangs: the capture thread blocks in read()
        msgs = notify.wait_for(lambda m: any(s.startswith("stalled") for s in statuses(m)))
        first_stalled = next(
            i for i, m in enumerate(msgs) if m.get("STATUS", "").startswith("stalled")
        )
        msgs = notify.wait_for(lambda m: len(statuses(m[first_stalled:])) >= 4)
        assert not any("WATCHDOG" in m for m in msgs[first_stalled:]), msgs[first_stalled:]
        assert all(s.startswith("stalled, 0.0 fps") for s in statuses(msgs[first_stalled:]))

        n = notify.count()
        camera.talking.set()  # frames again: pings come back
        notify.wait_for(lambda m: any("WATCHDOG" in x for x in m[n:]))
        stop(proc, notify)
    finally:
        proc.kill()
        camera.close()


def test_sighup_reloads_a_good_file_and_refuses_a_bad_one(
    tmp_path: Path, broker: Any, notify: NotifySocket
) -> None:
    assets = make_assets(tmp_path / "assets")
    cfg = agent_config(assets, broker, tmp_path / "state")
    config = write_config(tmp_path / "agent.yaml", cfg)
    log = tmp_path / "agent.log"
    proc = start(config, log, notify)
    try:
        msgs = notify.wait_for(with_key("READY", "1"))
        first_run = re.search(r"run (\w+)", statuses(msgs)[-1])
        assert first_run is not None

        cfg["sources"] = [source(assets, "belt2")]  # a changed, valid file
        write_config(config, cfg)
        n = notify.count()
        proc.send_signal(signal.SIGHUP)
        msgs = notify.wait_for(lambda m: with_key("READY", "1")(m[n:]))[n:]
        reloading = next(i for i, m in enumerate(msgs) if m.get("RELOADING") == "1")
        assert int(msgs[reloading]["MONOTONIC_USEC"]) > 0
        ready = next(i for i, m in enumerate(msgs) if m.get("READY") == "1")
        assert reloading < ready
        second_run = re.search(r"run (\w+)", msgs[ready]["STATUS"])
        assert second_run is not None and second_run[1] != first_run[1]

        config.write_text("model: {bundle: 7}\nsurprise: true\n")  # a bad file
        n = notify.count()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for(lambda m: sum("WATCHDOG" in x for x in m[n:]) >= 2)
        assert notify.wait_for(lambda m: "reload_config refused" in log.read_text())
        assert not any("RELOADING" in m for m in notify.since(n))
        stop(proc, notify)
    finally:
        proc.kill()


# -- MemoryDenyWriteExecute ----------------------------------------------------------------------

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux >= 6.3
#: Sets the kernel's memory-deny-write-execute (what systemd >= 254 uses for
#: MemoryDenyWriteExecute=yes where the kernel has it), proves a W+X mapping is now refused,
#: then execs the agent: the flag is inherited across execve.
MDWE_WRAPPER = f"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


def mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", MDWE_WRAPPER, "/bin/true"], check=False)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_runtimes_work_with_memory_deny_write_execute(
    tmp_path: Path, broker: Any, notify: NotifySocket, runtime: str
) -> None:
    if not mdwe_supported():
        pytest.skip(f"kernel {os.uname().release} lacks PR_SET_MDWE (Linux >= 6.3)")
    assets = make_assets(tmp_path / "assets")
    cfg = agent_config(assets, broker, tmp_path / "state", [source(assets, on_eof="stop")])
    if runtime == "tflite":
        cfg["model"]["bundle"] = str(tflite_classifier_bundle(tmp_path / "tflite"))
    config = write_config(tmp_path / "agent.yaml", cfg)
    log = tmp_path / "agent.log"
    proc = start(config, log, notify, sys.executable, "-c", MDWE_WRAPPER)
    assert proc.wait(60) == 0, log.read_text()
    msgs = notify.wait_for(with_key("STOPPING", "1"))
    assert with_key("READY", "1")(msgs), log.read_text()  # a result went through the model
    assert " ERROR " not in log.read_text()
    expected = "tflite" if runtime == "tflite" else "onnx"
    assert re.search(rf"running \S+ \(\S+, {expected}", log.read_text())


# -- the unit file -------------------------------------------------------------------------------

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt: systemd)"
)


@needs_analyze
def test_unit_exposure_is_at_most_2_5() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    level = re.search(r"Overall exposure level for edge-agent.service: (\d+\.\d+)", out)
    assert level is not None, out
    assert float(level[1]) <= MAX_EXPOSURE, out


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    """``verify`` checks the ExecStart binary exists: point it at this venv's edge-agent."""
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgesight/bin/edge-agent", AGENT))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # systemd < 254 does not know the restart back-off keys: the only lines allowed.
    other = [
        line
        for line in done.stderr.splitlines()
        if not re.search(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'", line)
    ]
    assert other == [], other


def test_unit_keeps_the_issue_promises() -> None:
    keys = [line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"\w+=", line)]
    unit = {k: v for k, v in keys}
    assert unit["Type"] == "notify" and unit["Restart"] == "on-failure"
    assert unit["StartLimitIntervalSec"] == "0" and int(unit["WatchdogSec"]) > 0
    assert unit["DevicePolicy"] == "closed" and unit["CapabilityBoundingSet"] == ""
    assert ["DeviceAllow", "char-video4linux rw"] in keys


# -- the notifier and the rule, without a process ----------------------------------------------


@pytest.mark.parametrize("abstract", [True, False])
def test_notifier_sends_to_path_and_abstract_sockets(tmp_path: Path, abstract: bool) -> None:
    path = str(tmp_path / "notify")
    address = f"@es-{uuid.uuid4().hex[:8]}" if abstract else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + address[1:] if abstract else path)
        notifier = SdNotifier.from_env({"NOTIFY_SOCKET": address})
        assert notifier.notify(READY=1, STATUS="two\nlines")
        assert server.recv(4096) == b"READY=1\nSTATUS=two lines"
        notifier.close()


def test_notifier_off_or_refusing_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    assert not SdNotifier.from_env({}).notify(READY=1)
    assert not SdNotifier.from_env({"NOTIFY_SOCKET": "relative"}).enabled
    assert "neither a path nor @abstract" in caplog.text
    gone = SdNotifier.from_env({"NOTIFY_SOCKET": f"@es-nobody-{uuid.uuid4().hex}"})
    assert not gone.notify(WATCHDOG=1) and not gone.notify(WATCHDOG=1)
    assert caplog.text.count("sd_notify to") == 1


def test_watchdog_interval_from_env() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 30
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=8) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({}) is None


def test_rule_pings_only_after_ready_and_when_results_advance(notify: NotifySocket) -> None:
    now = [0.0]
    dog = SystemdWatchdog(SdNotifier(notify.address), 30.0, clock=lambda: now[0])
    stats = StatsRegistry()
    results = stats.source("cam").results
    dog.attach(stats, "r1")
    results.inc()
    assert not dog.tick()  # systemd arms the watchdog at READY=1 only
    dog.result_seen()
    results.inc()
    now[0] = 15.0
    assert dog.tick()
    now[0] = 30.0
    assert not dog.tick()  # nothing since the last ping: a hung pipeline
    results.inc()
    now[0] = 45.0
    assert dog.tick()
    dog.reloading()
    now[0] = 45.0 + RELOAD_GRACE_S - 1
    assert dog.tick()  # a reload (model load) gets a bounded grace
    now[0] = 45.0 + RELOAD_GRACE_S
    assert not dog.tick()
    msgs = notify.wait_for(lambda m: len(statuses(m)) >= 8)
    assert "stalled, 0.0 fps, 2 results, run r1" in statuses(msgs)
    assert [m.get("RELOADING") for m in msgs if "MONOTONIC_USEC" in m] == ["1"]
