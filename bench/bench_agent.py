"""Agent speed and memory on this machine, against the targets, in one run.

    python bench/bench_agent.py --bundle BUNDLE [--bundle OTHER ...] [--frames 200] [--source V]

Starts a mosquitto on a free loopback port, then prints:
- edge-agent bench's rows (bare runtime loop, decode + NMS, whole agent, OpenCV DNN);
- the targets: agent >= 0.95 x bare loop, decode+NMS <= 10 % of inference, agent >= 1.5 x
  OpenCV DNN, RSS <= 128 MB, first result published <= 1.5 s after start.
RSS and first-result time come from `edge-agent run` as a subprocess on a generated clip.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.bench.rows import (
    BENCH_FRAMES,
    BENCH_ROUNDS,
    WARMUP_FRAMES,
    run_bench,
    write_bench_clip,
)
from edge_agent.bench.rows import format_table as bench_table
from edge_agent.config import MqttConfig
from edge_agent.demo.broker import free_port

AGENT = str(Path(sys.executable).parent / "edge-agent")
POLL_S = 0.005


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # peak resident set size
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_agent_once(bundle: Path, clip: Path, port: int, workdir: Path) -> tuple[float, float]:
    """(seconds from spawn to the first result on the broker, peak RSS MB)."""
    config = workdir / "agent.yaml"
    config.write_text(
        json.dumps(
            {
                "device_id": "bench",
                "model": {"bundle": str(bundle.resolve())},
                "sources": [{"id": "cam", "uri": str(clip)}],
                "mqtt": {"host": "127.0.0.1", "port": port},
                "log_level": "WARNING",
            }
        )
    )
    first: list[float] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: first or first.append(time.perf_counter())
    sub.connect("127.0.0.1", port)
    sub.subscribe("edgesight/bench/cam/result", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    start = time.perf_counter()
    proc = subprocess.Popen([AGENT, "run", "--config", str(config)])
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb(proc.pid))
        time.sleep(POLL_S)
    sub.loop_stop()
    sub.disconnect()
    return (first[0] - start if first else float("nan")), peak


BARE_PROBE = """
import json, sys
from pathlib import Path
import cv2, numpy as np, paho.mqtt.client
bundle = Path(sys.argv[1])
manifest = json.loads((bundle / "manifest.json").read_text())
model = str(bundle / manifest["model"]["file"])
if manifest["model"]["format"] == "onnx":
    import onnxruntime as ort
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()}
    run = lambda: session.run(None, feed)
else:
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=model, num_threads=2)
    interpreter.allocate_tensors()
    run = interpreter.invoke
for _ in range(30):
    run()
status = Path("/proc/self/status").read_text()
print(next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:")) / 1024)
"""


def bare_rss_mb(bundle: Path) -> float:
    """Peak RSS of importing OpenCV, the runtime and paho and running the model alone: the
    floor the agent's own memory is added to."""
    out = subprocess.run(
        [sys.executable, "-c", BARE_PROBE, str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--frames", type=int, default=BENCH_FRAMES)
    parser.add_argument("--threads", default=None, help="e.g. 1,2")
    parser.add_argument(
        "--rounds", type=int, default=BENCH_ROUNDS, help="interleaved rounds pooled into each row"
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="video to run (default: a generated clip; "
        "the shelf bundles are best measured on the demo's shelf clip)",
    )
    args = parser.parse_args()
    threads = [int(x) for x in args.threads.split(",")] if args.threads else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker, port = start_broker(work)
        try:
            clip = args.source or write_bench_clip(work / "clip.avi", args.frames + WARMUP_FRAMES)
            rows = run_bench(
                args.bundle,
                str(clip),
                MqttConfig(host="127.0.0.1", port=port),
                threads,
                args.frames,
                args.rounds,
            )
            print(bench_table(rows))
            print()
            print(
                f"{'bundle / variant':<34} {'agent/loop':>17} {'decode/inf':>10} "
                f"{'agent/dnn':>9} {'RSS MB':>7} {'bare MB':>7} {'first s':>7}"
            )
            for bundle in args.bundle:
                mine = [r for r in rows if r.bundle == str(bundle)]
                dnn = next((r for r in mine if r.path == "opencv-dnn"), None)
                runs = [run_agent_once(bundle, clip, port, work) for _ in range(args.rounds)]
                first_s = statistics.median(first for first, _ in runs)
                peak = max(rss for _, rss in runs)
                bare = bare_rss_mb(bundle)
                for r in (r for r in mine if r.path == "runtime"):
                    agent = next(a for a in mine if a.path == "agent" and a.variant == r.variant)
                    dec = next(d for d in mine if d.path == "decode" and d.variant == r.variant)
                    ratio_dnn = f"{agent.fps / dnn.fps:9.2f}" if dnn else f"{'n/a':>9}"
                    spread = [a / b for a, b in zip(agent.round_fps, r.round_fps, strict=True)]
                    ratio = f"{agent.fps / r.fps:.2f} ({min(spread):.2f}-{max(spread):.2f})"
                    print(
                        f"{bundle.name + ' ' + r.variant:<34} {ratio:>17} "
                        f"{dec.ms_p50 / r.ms_p50:10.1%} {ratio_dnn} {peak:7.0f} {bare:7.0f} "
                        f"{first_s:7.2f}"
                    )
            print(
                "\nagent/loop: pooled over the rounds (lowest-highest single round); RSS: "
                "highest peak of `edge-agent run` over the rounds; bare: the same imports "
                "(OpenCV, the runtime, paho) and the model run alone"
            )
            print(
                "targets: agent/loop >= 0.95, decode/inf <= 10 %, agent/dnn >= 1.5, "
                "RSS <= 128 MB, first result <= 1.5 s"
            )
        finally:
            broker.terminate()
            broker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
