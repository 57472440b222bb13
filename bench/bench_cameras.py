"""Camera faults, measured: how soon a live source notices each one and how soon it is back.

    PYTHONPATH=. python bench/bench_cameras.py [--down 10] [--timeout 5] [--only rtsp|mjpeg]

Runs a live source (edge_agent/sources.py, default settings unless given) against the real
test cameras of tests/helpers (gst-rtsp-server H.264 and an MJPEG server, 320x240 @ 15 fps on
loopback) and prints one table row per fault and camera:

- open: from open_source to the first frame kept, and how many buffered frames were drained;
- restart: the camera killed, started again ``--down`` seconds later on the same port: the
  gap in frames (last frame before the kill to the first after) and the time from the camera's
  return to the first frame (the issue's target: a 10 s restart costs at most 12 s);
- freeze: SIGSTOP: time to the `stalled` state; SIGCONT after 3 s: time to the first frame;
- wrong path: time to the `failed` state, and its reason;
- resolution: restarted at 640x480: time from the restart to the first 640x480 frame; then
  changed back to 320x240 on the open connection: time to the first 320x240 frame;
- close in a stall: how long close() takes while a read is blocked in a frozen camera.
The figures go into docs/sources.md's fault table.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

from edge_agent.capture_guard import wait_for_stuck
from edge_agent.config import SourceConfig
from edge_agent.health.source_state import FAILED, STALLED
from edge_agent.health.stats import StatsRegistry
from edge_agent.sources import open_source
from tests.helpers.mjpeg_server import MjpegCamera
from tests.helpers.rtsp_server import CameraProcess, RtspCamera, rtsp_available

WAIT_S = 60.0


class Reader:
    """A live source in a thread; frames' arrival times (monotonic) and sizes."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        self.stats = StatsRegistry()
        self.stop = threading.Event()
        cfg = SourceConfig(id="cam", uri=uri, capture_timeout_s=timeout_s)
        self.opened = time.monotonic()
        self.source = open_source(
            cfg, self.stop, self.stats.source("cam"), self.stats.source_states
        )
        self.arrivals: list[tuple[float, tuple[int, int]]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for frame in self.source.frames():
            self.arrivals.append((time.monotonic(), frame.image.shape[:2]))

    def state(self) -> tuple[str | None, str | None]:
        st = self.stats.source_states.get("cam")
        return (st.state, st.reason) if st else (None, None)

    def until(self, what: Callable[[], bool]) -> float:
        """Seconds until `what` holds (inf after WAIT_S)."""
        start = time.monotonic()
        while not what():
            if time.monotonic() - start > WAIT_S:
                return float("inf")
            time.sleep(0.005)
        return time.monotonic() - start

    def frames_after(self, n: int) -> Callable[[], bool]:
        return lambda: len(self.arrivals) > n

    def close(self) -> float:
        start = time.monotonic()
        self.stop.set()
        self.source.close()
        self.thread.join(10)
        return time.monotonic() - start


def bench(make: Callable[[], CameraProcess], name: str, down_s: float, timeout_s: float) -> None:
    row: dict[str, str] = {}
    with make() as cam:
        r = Reader(cam.url, timeout_s)
        row["open"] = f"{r.until(r.frames_after(0)):.2f} s"
        r.until(r.frames_after(30))
        row["drained"] = str(r.stats.source("cam").frames_drained.value)
        killed = time.monotonic()
        cam.kill()
        time.sleep(down_s)
        cam.start()
        restarted = time.monotonic()
        back = r.until(lambda: bool(r.arrivals) and r.arrivals[-1][0] > restarted)
        last_before = max(t for t, _ in r.arrivals if t < restarted)
        first_after = min(t for t, _ in r.arrivals if t > restarted)
        row["restart gap"] = f"{first_after - last_before:.1f} s"
        row["frames after the kill"] = str(sum(killed < t < restarted for t, _ in r.arrivals))
        row["back after restart"] = f"{back:.2f} s"
        r.until(r.frames_after(len(r.arrivals) + 10))
        cam.freeze()
        row["freeze: stalled after"] = f"{r.until(lambda: r.state()[0] == STALLED):.2f} s"
        time.sleep(max(0.0, 3.0 - timeout_s))
        n = len(r.arrivals)
        cam.resume()
        row["resume: frames after"] = f"{r.until(r.frames_after(n)):.2f} s"
        cam.freeze()
        time.sleep(1.5)
        row["close in stall"] = f"{r.close():.2f} s"
        cam.resume()
        r = Reader(cam.url_for("/no-such-path"), timeout_s)
        row["wrong path: failed after"] = f"{r.until(lambda: r.state()[0] == FAILED):.2f} s"
        row["reason"] = str(r.state()[1])
        r.close()
        r = Reader(cam.url, timeout_s)
        r.until(r.frames_after(5))
        cam.restart(width=640, height=480)
        new_size = r.until(lambda: bool(r.arrivals) and r.arrivals[-1][1] == (480, 640))
        row["restart at 640x480: frames after"] = f"{new_size:.2f} s"
        r.until(r.frames_after(len(r.arrivals) + 5))
        cam.change_resolution(320, 240)  # on the open connection
        live = r.until(lambda: r.arrivals[-1][1] == (240, 320))
        row["live change to 320x240: frames after"] = f"{live:.2f} s"
        r.close()
    print(f"\n{name} (down {down_s:g} s, capture timeout {timeout_s:g} s)")
    for key, value in row.items():
        print(f"  {key:<38} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", type=float, default=10.0, help="camera restart length, s")
    parser.add_argument("--timeout", type=float, default=5.0, help="capture_timeout_s")
    parser.add_argument("--only", choices=["rtsp", "mjpeg"])
    args = parser.parse_args()
    if args.only != "rtsp":
        bench(MjpegCamera, "MJPEG over HTTP", args.down, args.timeout)
    if args.only != "mjpeg":
        missing = rtsp_available()
        if missing:
            print(f"RTSP skipped: {missing}")
        else:
            bench(RtspCamera, "RTSP (H.264, TCP)", args.down, args.timeout)
    sys.stdout.flush()
    if wait_for_stuck(1.0):  # a worker returning from FFmpeg during exit aborts the process
        os._exit(0)


if __name__ == "__main__":
    main()
