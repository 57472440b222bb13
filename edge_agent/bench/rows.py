"""``edge-agent bench``: how fast each runtime, precision and thread count runs a bundle here,
measured in one run on this machine, and which variant to use.

Rows: the bare runtime loop (inference only, one pre-made tensor), decode + NMS alone, the
whole agent path (frames from a source through to results handed to MQTT), and a plain
OpenCV-DNN loop on the same ONNX file (what a user might write instead).
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.bundle import Bundle, load_bundle
from edge_agent.config import AgentConfig, ModelConfig, MqttConfig, SourceConfig
from edge_agent.predictor import Predictor
from edge_agent.runtimes import ModelRuntimeError
from edge_agent.types import Frame, Result

#: Frames timed per row after the warm-up; enough for a stable median on a Pi.
BENCH_FRAMES = 100
WARMUP_FRAMES = 5
#: Each row pools this many interleaved rounds (runtime, agent, runtime, agent, ...).
BENCH_ROUNDS = 3
BENCH_CLIP_SIZE = (640, 480)


@dataclass
class Row:
    variant: str  # e.g. "onnx int8 2t"
    path: str  # "runtime" | "decode" | "agent" | "opencv-dnn"
    fps: float
    ms_p50: float
    ms_p95: float
    runtime: str = ""
    threads: int = 0
    bundle: str = ""
    round_fps: tuple[float, ...] = ()  # each round's own figure, to show the spread


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def _row(
    variant: str,
    path: str,
    rounds_ms: list[list[float]],
    runtime: str = "",
    threads: int = 0,
    bundle: str = "",
) -> Row:
    """One row from each round's milliseconds per frame, pooled."""
    samples_ms = [ms for one in rounds_ms for ms in one]
    p50, p95 = _percentiles(samples_ms)
    fps = 1000.0 / statistics.mean(samples_ms)
    per_round = tuple(1000.0 / statistics.mean(one) for one in rounds_ms if one)
    return Row(variant, path, fps, p50, p95, runtime, threads, bundle, per_round)


def bench_image() -> np.ndarray:
    """A deterministic busy frame so decoders see candidates, not an empty scene."""
    rng = np.random.default_rng(0)
    w, h = BENCH_CLIP_SIZE
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (9, 9), 3)


def first_frame(source: str | None) -> np.ndarray:
    """The source's first frame (what the model really sees), else a busy synthetic frame."""
    if source is not None:
        cap = cv2.VideoCapture(source)
        ok, frame = cap.read()
        cap.release()
        if ok and frame is not None:
            return frame
    return bench_image()


def runtime_samples(
    bundle: Bundle, runtime: str, threads: int, frames: int, image: np.ndarray
) -> tuple[list[float], list[float]]:
    """Milliseconds of inference alone on a pre-made tensor, and of decode + NMS alone on
    its outputs (right after each inference, as the agent decodes)."""
    predictor = Predictor(bundle, runtime, threads)
    try:
        prepared = predictor.prepare(image)  # in the model's own dtype, as the agent hands it
        tensor, transform = prepared.tensor, prepared.transform
        for _ in range(WARMUP_FRAMES):
            outputs = predictor.runtime.run(tensor)
        infer_ms, decode_ms = [], []
        for _ in range(frames):
            t0 = time.perf_counter()
            outputs = predictor.runtime.run(tensor)
            t1 = time.perf_counter()
            predictor.decode(outputs, transform)
            t2 = time.perf_counter()
            infer_ms.append((t1 - t0) * 1000)
            decode_ms.append((t2 - t1) * 1000)
    finally:
        predictor.close()
    return infer_ms, decode_ms


def write_bench_clip(path: Path, frames: int) -> Path:
    w, h = BENCH_CLIP_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (w, h))
    base = bench_image()
    for i in range(frames):
        writer.write(np.roll(base, i * 4, axis=1))
    writer.release()
    return path


class _Stamps:
    """A sink noting when each result came; it needs no picture, like the publisher, so the
    agent runs as it does in the field."""

    name, needs_frame = "bench", False

    def __init__(self) -> None:
        self.times: list[float] = []

    def emit(self, result: Result, frame: Frame | None) -> None:
        self.times.append(time.perf_counter())

    def close(self) -> None:
        pass


def agent_samples(
    bundle: Bundle, runtime: str, threads: int, source: str, mqtt: MqttConfig, frames: int
) -> list[float]:
    """Milliseconds between results of the whole agent: source -> capture thread ->
    inference -> publish thread -> paho."""
    from edge_agent.pipeline import Agent

    cfg = AgentConfig(
        device_id="bench",
        model=ModelConfig(bundle=bundle.path, runtime=runtime, threads=threads),
        sources=[SourceConfig(id="bench", uri=source)],
        mqtt=mqtt,
    )
    stamps = _Stamps()
    with Agent(cfg, sinks=[stamps]) as agent:
        agent.wait()
    usable = stamps.times[WARMUP_FRAMES:][:frames]
    if len(usable) < 2:
        raise RuntimeError(f"agent produced only {len(stamps.times)} results on {source}")
    return [(b - a) * 1000 for a, b in itertools.pairwise(usable)]


def opencv_dnn_samples(
    bundle: Bundle, frames: int, image: np.ndarray, rounds: int = 1
) -> list[list[float]] | None:
    """What a user might write: cv2.dnn on the same ONNX file, blobFromImage, forward
    (milliseconds per frame, each round; None when OpenCV cannot run the model)."""
    spec = bundle.manifest.input
    if bundle.manifest.model.format != "onnx":
        return None
    try:
        net = cv2.dnn.readNetFromONNX(str(bundle.model_path))
    except cv2.error:
        return None  # OpenCV refuses many QDQ INT8 graphs (see docs/bench.md)
    scale = spec.scale / float(np.mean(spec.std))
    mean = [m * 255 for m in spec.mean]
    out = []
    for _ in range(rounds):
        samples = []
        for i in range(frames + WARMUP_FRAMES):
            t0 = time.perf_counter()
            blob = cv2.dnn.blobFromImage(
                image, scale, (spec.width, spec.height), mean, swapRB=spec.color == "RGB"
            )
            net.setInput(blob)
            net.forward(net.getUnconnectedOutLayersNames())
            if i >= WARMUP_FRAMES:
                samples.append((time.perf_counter() - t0) * 1000)
        out.append(samples)
    return out


def run_bench(
    bundles: list[Path],
    source: str | None,
    mqtt: MqttConfig,
    threads: list[int] | None = None,
    frames: int = BENCH_FRAMES,
    rounds: int = BENCH_ROUNDS,
) -> list[Row]:
    """Every runtime row beside its agent row, each pooled over ``rounds`` interleaved
    rounds, so a noisy neighbour slows both sides of a ratio alike."""
    threads = threads or sorted({1, os.cpu_count() or 1})
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgesight-bench-") as tmp:
        clip = source or str(write_bench_clip(Path(tmp) / "bench.avi", frames + WARMUP_FRAMES))
        image = first_frame(source)
        for path in bundles:
            bundle = load_bundle(path)
            runtime = bundle.manifest.model.format
            precision = bundle.manifest.model.precision
            for n in threads:
                infer: list[list[float]] = []
                decode: list[list[float]] = []
                agent: list[list[float]] = []
                try:
                    for _ in range(rounds):
                        i, d = runtime_samples(bundle, runtime, n, frames, image)
                        infer.append(i)
                        decode.append(d)
                        agent.append(agent_samples(bundle, runtime, n, clip, mqtt, frames))
                except ModelRuntimeError as exc:
                    print(f"skipped {path} with {runtime}: {exc}")
                    continue
                name, where = f"{runtime} {precision} {n}t", (runtime, n, str(path))
                rows += [
                    _row(name, "runtime", infer, *where),
                    _row(name, "decode", decode, *where),
                    _row(name, "agent", agent, *where),
                ]
            dnn = opencv_dnn_samples(bundle, frames, image, rounds)  # one model load
            if dnn:
                rows.append(_row(f"opencv-dnn {precision}", "opencv-dnn", dnn, bundle=str(path)))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'variant':<22} {'path':<11} {'fps':>8} {'p50 ms':>8} {'p95 ms':>8}"]
    lines += [
        f"{r.variant:<22} {r.path:<11} {r.fps:>8.1f} {r.ms_p50:>8.2f} {r.ms_p95:>8.2f}"
        for r in rows
    ]
    return "\n".join(lines)


def recommend(rows: list[Row]) -> Row | None:
    """The fastest whole-agent variant."""
    agents = [r for r in rows if r.path == "agent"]
    return max(agents, key=lambda r: r.fps) if agents else None
