"""`edge-agent serve` from the command line answers a real HTTP client, then stops on SIGTERM."""

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.cli.serve import build_parser, main
from edge_agent.demo.broker import free_port
from edge_agent.serve.addresses import UrlAllowList
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
        url = urllib.request.Request(
            f"http://127.0.0.1:{port}/url", data=b'{"url": "http://127.0.0.1/x.png"}'
        )
        try:
            NO_PROXY.open(url, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 403 and b"--allow-url" in exc.read()  # /url is off by default
        else:
            raise AssertionError("POST /url answered although it is off")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "POST /image 200" in err
    finally:
        proc.kill()


def test_url_flags():
    args = build_parser().parse_args(
        ["b", "--allow-url", "--url-allow", "10.0.0.0/8,camera.local", "--url-allow", "::1"]
    )
    assert args.allow_url and len(args.url_allow) == 2
    assert build_parser().parse_args(["b"]).allow_url is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["b", "--url-allow", "10.0.0.0/8"], "--url-allow needs --allow-url"),
        (["b", "--allow-url", "--no-url"], "not allowed with argument"),
        (["b", "--allow-url", "--url-allow", "10.0.0.0/40"], "expected a CIDR"),
        (["b", "--max-pixels", "0"], "expected an integer >= 1"),
        (["b", "--request-timeout-s", "0"], "expected seconds > 0"),
    ],
)
def test_bad_url_and_limit_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_url_is_a_deprecated_no_op(tmp_path, caplog):
    assert main([str(tmp_path / "missing"), "--no-url"]) == 2  # the bundle is missing
    assert "--no-url is deprecated" in caplog.text


def test_allow_lists_combine():
    a, b = UrlAllowList.parse("10.0.0.0/8"), UrlAllowList.parse("camera.local")
    assert str(a | b) == "10.0.0.0/8,camera.local"
