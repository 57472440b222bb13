"""Test cameras in child processes with fault controls, and the H.264 RTSP camera.

A camera runs in a process of its own so the tests can do to it what happens to real cameras:
kill it (power cut), start it again on the same port (reboot, maybe at another resolution),
SIGSTOP it (wedged firmware: sockets stay open, nothing moves) and SIGCONT it. The child prints
``READY <port>`` on stdout once it listens; its stderr goes to a log file quoted when it fails.

The RTSP camera is gst-rtsp-server (Debian: scripts/ensure-camera-tools.sh) serving H.264 of
frames it draws itself, each stamped with its capture time (stamp.py); unknown paths get RTSP
404. ``change_resolution`` changes the size on the running stream (the same connections).
python3-gi binds the SYSTEM interpreter (no numpy there), so this file is also the child's
script, run by /usr/bin/python3 -I by path: only the standard library at module level, gi and
the pure-Python stamp.py imported inside the child's functions.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

#: A child that has not said READY by then is broken (RTSP: GStreamer plugin scan on the first
#: run after install takes ~2 s here; later starts take ~0.3 s).
START_TIMEOUT_S = 20.0
#: SIGKILL is immediate, but the kernel needs a moment to reap; waiting longer means a bug.
STOP_TIMEOUT_S = 5.0
READY = "READY"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """Run in the child between fork and exec (Popen's preexec_fn): be SIGKILLed when the
    parent dies, so no camera outlives a crashed or interrupted test run (Linux prctl
    PR_SET_PDEATHSIG, kept across exec; a no-op elsewhere). It fires when the *thread* that
    started the child ends, so start cameras from the test's own thread."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class CameraProcess:
    """Start, kill, restart, freeze and resume one child camera on a fixed loopback port.

    Subclasses say which command runs the camera (``command()``) and how its URLs look."""

    scheme = "http"

    def __init__(self, path: str, width: int, height: int, fps: int, port: int = 0) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        self.path = path
        self.width, self.height, self.fps = width, height, fps
        self.port = port or free_port()
        self._proc: subprocess.Popen[str] | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix=f"{self.scheme}-camera-"))
        self.log_path = self._logdir / "camera.log"
        #: ``change_resolution`` writes "W H" here; the running child polls it every frame.
        self.control_path = self._logdir / "control"
        self.starts = 0

    # ---- what a subclass provides -------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    # ---- addresses ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for(self.path)

    def url_for(self, path: str) -> str:
        """The URL of any path on this camera (a wrong one answers 404)."""
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    # ---- lifecycle and faults -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("camera not started")
        return self._proc.pid

    def start(self) -> Self:
        """Start the child and wait until it listens; raises RuntimeError with its log if not."""
        if self.running:
            raise RuntimeError(f"camera already running (pid {self.pid})")
        self.control_path.unlink(missing_ok=True)  # the command line says the size at start
        log = self.log_path.open("a")
        log.write(f"---- start {self.starts + 1}: {' '.join(self.command())}\n")
        log.flush()
        self._proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        self.starts += 1
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.1)
            if ready:
                line = self._proc.stdout.readline()
                if line.startswith(READY):
                    return
                if not line and self._proc.poll() is not None:
                    break
        self.kill()
        raise RuntimeError(
            f"{type(self).__name__} on port {self.port} did not start within "
            f"{START_TIMEOUT_S} s; its log {self.log_path}:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """Power cut: SIGKILL, no goodbye on any connection (works on a frozen child too)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self, width: int | None = None, height: int | None = None) -> Self:
        """Reboot on the same port, at a new resolution if one is given."""
        self.kill()
        self.width = width or self.width
        self.height = height or self.height
        return self.start()

    def change_resolution(self, width: int, height: int) -> None:
        """Send ``width`` x ``height`` from the next frame on, on the same connections (a live
        sensor-mode change, not a reboot: no client is dropped). The child polls a control file
        each frame, so the change lands within a frame interval or two."""
        if not self.running:
            raise RuntimeError("camera not running: use restart(width, height)")
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(f"{width} {height}\n")
        tmp.replace(self.control_path)  # atomic: the child never reads half a line
        self.width, self.height = width, height

    def freeze(self) -> None:
        """Wedge the camera: SIGSTOP. Connections stay open and the kernel still accepts new
        ones into the listen backlog, but nothing is answered or sent."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def read_control(path: str) -> tuple[int, int] | None:
    """The child's side of ``change_resolution``: (width, height) asked for, or None."""
    try:
        width, height = Path(path).read_text().split()
        return int(width), int(height)
    except (OSError, ValueError):
        return None


# ---- the RTSP camera --------------------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_HINT = "run scripts/ensure-camera-tools.sh (Debian: gir1.2-gst-rtsp-server-1.0 and co.)"
#: The camera draws its own frames (a capture-time stamp, see stamp.py, and a moving square) and
#: pushes them into appsrc, timestamped with the pipeline clock when pushed (do-timestamp); at
#: most 2 wait there, the oldest dropped (leaky-type=downstream), so a pipeline that is not
#: playing yet never hands a client a backlog. One keyframe a second, and SPS/PPS with every
#: keyframe (config-interval=-1): a client that connects mid-stream decodes within a second,
#: and one already connected learns a new resolution from the next keyframe. threads=1: with
#: x264's sliced threads (zerolatency's default) FFmpeg decoded the stamp's third block row,
#: whose bits change every frame, as smeared grey in about half the frames (measured here).
_PIPELINE = (
    "( appsrc name=src is-live=true do-timestamp=true format=time max-buffers=2 leaky-type=2"
    " ! videoconvert ! video/x-raw,format=I420"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} threads=1"
    " ! video/x-h264,profile=baseline ! h264parse config-interval=-1"
    " ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def rtsp_available() -> str | None:
    """None when the system python3 can run the RTSP camera, else why not (with the fix)."""
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('x264enc'), 'x264enc missing';"
        "assert Gst.ElementFactory.find('appsrc'), 'appsrc missing'"
    )
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} unusable ({exc}); {INSTALL_HINT}"
    if done.returncode != 0:
        return f"GStreamer RTSP server unavailable: {done.stderr.strip()[-300:]}; {INSTALL_HINT}"
    return None


class RtspCamera(CameraProcess):
    """An H.264 RTSP camera at rtsp://127.0.0.1:<port><path> (default /cam), 320x240 @ 15 fps.

    One shared pipeline per mount, so every client sees the same stream, as on a real camera."""

    scheme = "rtsp"

    def __init__(
        self, path: str = "/cam", width: int = 320, height: int = 240, fps: int = 15, port: int = 0
    ) -> None:
        super().__init__(path, width, height, fps, port)

    def command(self) -> list[str]:
        # -I: the script's folder (tests/helpers, with its http.py) must not shadow the stdlib
        return [SYSTEM_PYTHON, "-I", __file__, str(self.port), self.path, str(self.width),
                str(self.height), str(self.fps), str(self.control_path)]  # fmt: skip


def gray_frame(index: int, width: int, height: int, t: float) -> tuple[bytes, int]:
    """Frame ``index`` as a GRAY8 plane (bytes, row stride): a white square crossing a grey
    field, stamped with ``t``. Pure Python: the system interpreter has no numpy."""
    from tests.helpers.stamp import draw_stamp_plane

    stride = (width + 3) // 4 * 4  # GStreamer's default GRAY8 stride: rows padded to 4 bytes
    plane = bytearray(b"\x40" * (stride * height))
    side = max(8, height // 6)
    x = (index * 4) % max(1, width - side)
    for row in range(height // 3, height // 3 + side):
        plane[row * stride + x : row * stride + x + side] = b"\xff" * side
    draw_stamp_plane(plane, width, height, t, stride)
    return bytes(plane), stride


def serve(port: int, path: str, width: int, height: int, fps: int, control: str) -> None:
    """The child: run gst-rtsp-server until killed, making a frame every 1/fps s and pushing it
    to the mount's shared media while one exists (clients connected)."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    size = [width, height]
    live: dict[str, Any] = {"src": None, "caps": None, "index": 0}

    def caps() -> Any:
        return Gst.Caps.from_string(
            f"video/x-raw,format=GRAY8,width={size[0]},height={size[1]},framerate={fps}/1"
        )

    def on_configure(_factory: Any, media: Any) -> None:
        src = media.get_element().get_by_name("src")
        src.set_property("caps", caps())
        live.update(src=src, caps=tuple(size))

        def on_unprepared(_media: Any) -> None:  # the last client left: this media is done
            if live["src"] is src:
                live.update(src=None, caps=None)

        media.connect("unprepared", on_unprepared)

    def tick() -> bool:
        new = read_control(control)
        if new and list(new) != size:
            size[:] = new
            sys.stderr.write(f"resolution now {size[0]}x{size[1]}\n")
        data, _ = gray_frame(live["index"], size[0], size[1], time.time())
        live["index"] += 1
        src = live["src"]
        if src is not None:
            if live["caps"] != tuple(size):  # same connection, new size: renegotiate
                src.set_property("caps", caps())
                live["caps"] = tuple(size)
            src.emit("push-buffer", Gst.Buffer.new_wrapped(data))
        return True

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_PIPELINE.format(fps=fps))
    factory.set_shared(True)
    factory.connect("media-configure", on_configure)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    GLib.timeout_add(max(1, round(1000 / fps)), tick)
    print(f"{READY} {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    # the stamp module by file path: the repo root, not tests/helpers (its http.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    _port, _path, _w, _h, _fps, _control = sys.argv[1:7]
    serve(int(_port), _path, int(_w), int(_h), int(_fps), _control)
