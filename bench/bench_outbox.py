"""Durable outbox speed on this machine, against the target, in one run.

    python bench/bench_outbox.py [--seconds 4] [--payload 1024] [--dir FOLDER]

Prints three tables:
- persisted: results offered at steady rates with ~1 KB payloads for a few seconds, committed
  every second in one transaction; "persisted/s" counts the rows in the file at the end (a
  second connection reads them), "lost" the puts not on disk; each commit's duration (median,
  max: it must stay well under the 1 s interval) and put() latency p50/p99 in microseconds,
  with synchronous NORMAL (the default) and FULL; the share of one core the writer's commits
  and the puts used (thread CPU time per wall second). Target >= 2,000 results/s.
- inference: frames/s of a stand-in inference loop (onnxruntime running a small conv net with
  the agent's session options, which releases the GIL as the agent's runtime does; and a
  pure-Python loop, which holds it) alone, and while it puts one result a frame and a side
  thread puts 2,000 results/s into an outbox whose writer commits every second; the control
  runs the same load into a list, to tell the outbox's cost from the load's. Runs of 1 s
  alternate (alone, control, outbox) for 30 rounds, and the change is the median (and
  quartiles) of each round's ratio: other processes on a shared machine move single runs by
  10 % or more, and pairing neighbouring runs cancels most of that.
  The whole agent with and without the outbox is bench/bench_outbox_agent.py's.
- open: time to open (quick_check + schema check) an outbox holding N MB, and the file size.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.publish.outbox import Outbox

#: Results/s offered. Flat out would be put()'s own speed and a backlog of gigabytes in memory.
RATES = (2_000, 5_000, 10_000, 20_000, 40_000)
#: The stand-in model: 320x320 RGB in, a few 3x3 convs, like a small detector's backbone.
MODEL_SIZE = 320
MODEL_CHANNELS = (32, 64, 128, 128)
TOPIC = "edgesight/bench/cam/result"
COMMIT_INTERVAL_S = 1.0
#: Alone / control / with-outbox runs of LOOP_RUN_S alternate this many times; the table shows
#: medians of each round's ratio, which cancel the load other processes put on the machine.
ROUNDS = 30
LOOP_RUN_S = 1.0
#: Results/s a side thread puts during the "with outbox" loop: the persistence target, as if
#: many sources shared the device.
SIDE_RATE = 2_000
#: Puts between commits while filling an outbox for the open test (below the memory cap).
OPEN_FILL_BATCH = 8192


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rows_on_disk(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


def persist_run(
    folder: Path, rate: int, seconds: float, payload: bytes, synchronous: str
) -> dict[str, float]:
    """Offer ``rate`` puts/s for ``seconds`` while a flusher commits every COMMIT_INTERVAL_S
    (what the writer thread does; here each commit is timed); count the rows on disk."""
    path = folder / f"persist-{rate}-{synchronous}.db"
    ob = Outbox(
        path,
        max_bytes=2**34,
        max_age_s=3600,
        commit_interval_s=3600,  # the flusher below commits instead, and times it
        max_memory_bytes=2**34,  # 1 s at 40,000/s is more than the default 32 MiB
        synchronous=synchronous,  # type: ignore[arg-type]
    )
    commits: list[float] = []
    cpu: list[float] = []  # the flusher thread's CPU time per commit: the writer's cost
    stop = threading.Event()

    def flusher() -> None:
        while not stop.wait(COMMIT_INTERVAL_S):
            t0, c0 = time.perf_counter(), time.thread_time()
            ob.flush()
            commits.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)

    thread = threading.Thread(target=flusher, name="bench-flusher")
    latencies: list[float] = []
    start = time.perf_counter()
    thread.start()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        if n >= (now - start) * rate:
            time.sleep(0.0005)
            continue
        t0 = time.perf_counter_ns()
        ob.put("result", TOPIC, payload, 1, False)
        latencies.append((time.perf_counter_ns() - t0) / 1000)
        n += 1
    stop.set()
    thread.join()
    t0 = time.perf_counter()
    ob.flush()  # the last second's rows
    commits.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    committed = rows_on_disk(path)
    ob.close()
    return {
        "offered": n / elapsed,
        "persisted": committed / elapsed,
        "lost": n - committed,
        "commit_ms": 1000 * statistics.median(commits),
        "commit_max_ms": 1000 * max(commits),
        "writer_cpu": sum(cpu) / elapsed,
        "put_cpu": sum(latencies) / 1e6 / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
    }


def build_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, prev = [], [], "images"
    cin = 3
    for k, cout in enumerate(MODEL_CHANNELS):
        w = np.random.default_rng(k).standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.1
        inits.append(helper.make_tensor(f"w{k}", TensorProto.FLOAT, w.shape, w.ravel()))
        nodes.append(
            helper.make_node("Conv", [prev, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1], strides=[2, 2])
        )
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
        prev, cin = f"r{k}", cout
    graph = helper.make_graph(
        nodes,
        "standin",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, [1, 3, MODEL_SIZE, MODEL_SIZE]
            )
        ],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def loop_rate(step: Callable[[], None], seconds: float) -> float:
    start = time.perf_counter()
    frames = 0
    while time.perf_counter() - start < seconds:
        step()
        frames += 1
    return frames / (time.perf_counter() - start)


def with_load(
    step: Callable[[], None], seconds: float, put: Callable[[str, bool], object]
) -> float:
    """The loop's rate while it puts one result a frame and a side thread puts SIDE_RATE/s."""
    stop = threading.Event()

    def side() -> None:
        start, n = time.perf_counter(), 0
        while not stop.is_set():
            if n >= (time.perf_counter() - start) * SIDE_RATE:
                time.sleep(0.001)
                continue
            put("count", True)
            n += 1

    thread = threading.Thread(target=side, name="bench-side")
    thread.start()

    def framed() -> None:
        step()
        put("result", False)

    try:
        return loop_rate(framed, seconds)
    finally:
        stop.set()
        thread.join()


def with_outbox(path: Path, step: Callable[[], None], seconds: float, payload: bytes) -> float:
    """``with_load`` into an outbox whose own writer thread commits every second."""
    with Outbox(path, max_bytes=2**34, max_age_s=3600) as ob:
        return with_load(
            step, seconds, lambda kind, retain: ob.put(kind, TOPIC, payload, 1, retain)
        )


def with_list(step: Callable[[], None], seconds: float, payload: bytes) -> float:
    """The control: the same load, but each put appends to a list (no outbox, no disk)."""
    kept: list[tuple[str, str, bytes, bool]] = []
    return with_load(
        step, seconds, lambda kind, retain: kept.append((kind, TOPIC, payload, retain))
    )


def python_step() -> None:
    total = 0
    for i in range(20_000):
        total += i * i


def change(new: list[float], old: list[float]) -> str:
    """Median and quartiles of new/old - 1 over paired rounds, as text."""
    ratios = [n / o - 1 for n, o in zip(new, old, strict=True)]
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    return f"{q2:+.1%} ({q1:+.1%}, {q3:+.1%})"


def inference_rows(
    folder: Path, payload: bytes
) -> list[tuple[str, list[float], list[float], list[float]]]:
    steps: list[tuple[str, Callable[[], None]]] = []
    try:
        import onnxruntime as ort

        model = folder / "standin.onnx"
        build_model(model)
        opts = ort.SessionOptions()
        # As edge_agent/runtimes/onnx.py sets them (threads: 2, no spinning).
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        feed = {
            "images": np.random.default_rng(0).random((1, 3, MODEL_SIZE, MODEL_SIZE), np.float32)
        }
        steps.append(("onnxruntime conv net", lambda: session.run(None, feed) and None))
    except ImportError as exc:
        print(f"(onnxruntime or onnx missing, skipping that loop: {exc})", file=sys.stderr)
    steps.append(("pure-Python loop (GIL)", python_step))
    rows = []
    for name, step in steps:
        for _ in range(20):
            step()
        alone, control, shared = [], [], []
        for k in range(ROUNDS):  # short alternating runs: drift in the machine's load cancels
            alone.append(loop_rate(step, LOOP_RUN_S))
            control.append(with_list(step, LOOP_RUN_S, payload))
            path = folder / f"loop-{len(rows)}-{k}.db"
            shared.append(with_outbox(path, step, LOOP_RUN_S, payload))
        rows.append((name, alone, control, shared))
    return rows


def open_rows(
    folder: Path, sizes_mb: tuple[int, ...], payload: bytes
) -> list[tuple[int, float, float, int]]:
    """(payload MB, seconds to open, file MB, entries found) for outboxes of each size."""
    rows = []
    for mb in sizes_mb:
        path = folder / f"open-{mb}.db"
        with Outbox(path, max_bytes=2**34, max_age_s=3600, commit_interval_s=3600) as ob:
            for n in range(mb * 2**20 // len(payload)):
                ob.put("result", TOPIC, payload, 1, False)
                if n % OPEN_FILL_BATCH == 0:
                    ob.flush()
        start = time.perf_counter()
        ob = Outbox(path, max_bytes=2**34, max_age_s=3600)
        opened = time.perf_counter() - start
        rows.append((mb, opened, path.stat().st_size / 2**20, ob.depth))
        ob.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per row (default 4)")
    parser.add_argument("--payload", type=int, default=1024, help="payload bytes (default 1024)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the databases go (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    payload = b"x" * args.payload
    with tempfile.TemporaryDirectory(prefix="bench-outbox-", dir=args.dir) as tmp:
        folder = Path(tmp)
        print(f"persisted ({args.payload} B payloads, commit every 1 s, {args.seconds:g} s a row)")
        print(
            f"{'sync':<7}{'offered/s':>10}{'persisted/s':>12}{'lost':>6}{'commit ms':>10}"
            f"{'max ms':>8}{'put p50 us':>11}{'p99 us':>8}{'CPU writer':>11}{'puts':>6}"
        )
        for sync in ("NORMAL", "FULL"):
            for rate in RATES:
                r = persist_run(folder, rate, args.seconds, payload, sync)
                print(
                    f"{sync:<7}{r['offered']:>10,.0f}{r['persisted']:>12,.0f}{r['lost']:>6.0f}"
                    f"{r['commit_ms']:>10.1f}{r['commit_max_ms']:>8.1f}"
                    f"{r['p50']:>11.1f}{r['p99']:>8.1f}"
                    f"{r['writer_cpu']:>11.1%}{r['put_cpu']:>6.1%}"
                )
        print(
            f"\ninference stand-in: frames/s alone (median of {ROUNDS} {LOOP_RUN_S:g} s runs), and "
            "the change, median (quartiles) of each round's ratio,\nwhen it puts one result a "
            f"frame plus {SIDE_RATE:,}/s from a side thread into a list (control) or the outbox"
        )
        print(f"{'loop':<24}{'alone/s':>8}{'control':>25}{'outbox':>25}{'outbox/control':>25}")
        for name, alone, control, shared in inference_rows(folder, payload):
            print(
                f"{name:<24}{statistics.median(alone):>8.0f}{change(control, alone):>25}"
                f"{change(shared, alone):>25}{change(shared, control):>25}"
            )
        print("\nopen (quick_check + schema) of a full outbox")
        print(f"{'payload MB':>10}{'open s':>9}{'file MB':>9}{'entries':>9}")
        for mb, seconds, size, depth in open_rows(folder, (16, 64), payload):
            print(f"{mb:>10}{seconds:>9.3f}{size:>9.1f}{depth:>9,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
