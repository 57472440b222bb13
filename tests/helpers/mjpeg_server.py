"""The HTTP MJPEG test camera (multipart/x-mixed-replace, like a cheap IP camera) in a child
process, with the RTSP camera's fault controls (kill, restart, freeze, resume, new resolution)
and live resolution change, plus the two faults only HTTP cameras have: 401 (basic auth) and
silent (accepts the connection, reads the request, never answers).

Every frame carries its capture time (stamp.py). Any path but the camera's answers 404. This
file is also the child's script, run by the venv's python -I by file path (it needs cv2 to
encode the JPEGs).
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if __package__:
    from tests.helpers.rtsp_server import READY, CameraProcess, read_control
    from tests.helpers.stamp import draw_stamp
else:  # run as the child's script: the sibling by file path, no package needed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.helpers.rtsp_server import READY, CameraProcess, read_control
    from tests.helpers.stamp import draw_stamp

BOUNDARY = "frame"
JPEG_QUALITY = 80


class MjpegCamera(CameraProcess):
    """An MJPEG camera at http://127.0.0.1:<port><path> (default /stream.mjpg), 320x240 @ 15 fps.

    ``auth=(user, password)`` makes it answer 401 without those credentials (they go in the URL:
    ``url_with_auth``); ``silent=True`` makes it accept and never answer."""

    scheme = "http"

    def __init__(
        self,
        path: str = "/stream.mjpg",
        width: int = 320,
        height: int = 240,
        fps: int = 15,
        port: int = 0,
        auth: tuple[str, str] | None = None,
        silent: bool = False,
    ) -> None:
        super().__init__(path, width, height, fps, port)
        self.auth = auth
        self.silent = silent

    def command(self) -> list[str]:
        # -I: the script's folder (tests/helpers, with its http.py) must not shadow the stdlib
        cmd = [sys.executable, "-I", __file__, str(self.port), self.path,
               str(self.width), str(self.height), str(self.fps),
               "--control", str(self.control_path)]  # fmt: skip
        if self.auth:
            cmd += ["--auth", f"{self.auth[0]}:{self.auth[1]}"]
        if self.silent:
            cmd.append("--silent")
        return cmd

    def url_with_auth(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}{self.path}"


# ---- the child ----------------------------------------------------------------------------------


def picture(index: int, width: int, height: int, t: float) -> bytes:
    """Frame ``index`` as JPEG: a white square crossing a grey field, the index in text, so
    consecutive frames differ (a frozen stream is visible in the pixels too), and the capture
    time ``t`` stamped in the top rows (stamp.py)."""
    import cv2
    import numpy as np

    img = np.full((height, width, 3), 64, np.uint8)
    side = max(8, height // 6)
    x = (index * 4) % max(1, width - side)
    img[height // 3 : height // 3 + side, x : x + side] = 255
    cv2.putText(img, str(index), (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 1)
    draw_stamp(img, t)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return bytes(buf.tobytes())


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(args.auth.encode()).decode() if args.auth else None
    period_s = 1.0 / args.fps

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the stream ends when the connection does

        def log_message(self, format: str, *a: object) -> None:
            sys.stderr.write(f"{self.address_string()} {format % a}\n")

        def do_GET(self) -> None:
            if args.silent:
                while self.rfile.read1(4096):  # hold the connection until the client goes
                    pass
                return
            if self.path.split("?", 1)[0] != args.path:
                self.send_error(404, f"no stream at {self.path}; try {args.path}")
                return
            if expected and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            index, start = 0, time.monotonic()
            try:
                while True:
                    # a resolution change reaches every client from its next frame on
                    width, height = read_control(args.control) or (args.width, args.height)
                    jpeg = picture(index, width, height, time.time())
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    head += f"Content-Length: {len(jpeg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg + b"\r\n")
                    self.wfile.flush()
                    index += 1
                    time.sleep(max(0.0, start + index * period_s - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="MJPEG test camera (tests/helpers)")
    for name in ("port", "path", "width", "height", "fps"):
        parser.add_argument(name, type=str if name == "path" else int)
    parser.add_argument("--control", default="", help="file with 'W H' to change size live")
    parser.add_argument("--auth", help="user:password for basic auth (else none)")
    parser.add_argument("--silent", action="store_true", help="accept, never answer")
    args = parser.parse_args(argv)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    print(f"{READY} {httpd.server_address[1]}", flush=True)
    threading.Thread(target=httpd.serve_forever, name="mjpeg-camera", daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    serve(sys.argv[1:])
