"""`edge-agent serve` from the command line answers a real HTTP client, then stops on SIGTERM."""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from edge_agent.demo.broker import free_port
from tests.helpers.http import NO_PROXY
from tools.toy_models import colour_blocks_bundle

AGENT = str(Path(sys.executable).parent / "edge-agent")


def test_serve_command(tmp_path):
    bundle = colour_blocks_bundle(tmp_path / "b")
    port = free_port()
    proc = subprocess.Popen(
        [AGENT, "serve", str(bundle), "--port", str(port), "--threads", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        img = np.full((480, 640, 3), 60, np.uint8)
        img[96:192, 128:256] = (0, 0, 255)
        body = cv2.imencode(".jpg", img)[1].tobytes()
        answer = None
        for _ in range(100):  # until the server listens
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/image",
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                )
                with NO_PROXY.open(req, timeout=5) as resp:  # CI may set http_proxy
                    answer = json.loads(resp.read())
                break
            except OSError:
                time.sleep(0.1)
        assert answer is not None, "serve never answered"
        (pred,) = answer["predictions"]
        assert pred["tagName"] == "red" and pred["boundingBox"]["left"] == 0.2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "POST /image 200" in err
    finally:
        proc.kill()
