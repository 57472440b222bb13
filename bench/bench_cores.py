"""How much a model on one core slows down while another core works: the floor under the
agent's agent/loop ratio on this machine, whatever the agent's own code does.

    python bench/bench_cores.py --bundle BUNDLE [--frames 300] [--rounds 4]

The bare runtime loop (1 thread, pinned to the first CPU) is timed alone and while a helper
process pinned to the second CPU runs (a) a pure Python spin loop, which touches almost no
memory, and (b) a numpy memory sweep. On machines with independent cores (a Raspberry Pi, most
laptops) (a) costs nothing; on a VM whose vCPUs share a physical core it does not: the agent
must decode video on that second vCPU, so its ratio to the bare loop cannot reach 1 there.
Rounds are interleaved so host noise hits every row alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.bench import first_frame, runtime_samples
from edge_agent.bundle import load_bundle

LOADS = {
    "python spin loop": "while True:\n    pass",
    "numpy memory sweep": "import numpy as np\na = np.ones(16_000_000, np.float32)\n"
    "while True:\n    a += 1.0",
}
SETTLE_S = 0.3


def start_load(code: str, cpu: int) -> subprocess.Popen:
    pin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n"
    return subprocess.Popen([sys.executable, "-c", pin + code])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--source", help="video whose first frame is the input")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs two CPUs")
        return 1
    os.sched_setaffinity(0, {cpus[0]})  # this thread runs the model; ORT threads inherit it
    bundle = load_bundle(args.bundle)
    runtime = bundle.manifest.model.format
    image = first_frame(args.source)
    samples: dict[str, list[float]] = {"alone": [], **{name: [] for name in LOADS}}
    for _ in range(args.rounds):
        samples["alone"] += runtime_samples(bundle, runtime, 1, args.frames, image)[0]
        for name, code in LOADS.items():
            load = start_load(code, cpus[1])
            try:
                time.sleep(SETTLE_S)
                samples[name] += runtime_samples(bundle, runtime, 1, args.frames, image)[0]
            finally:
                load.kill()
                load.wait()
    alone = statistics.mean(samples["alone"])
    print(f"{bundle.path.name}, {runtime}, 1 thread on CPU {cpus[0]}; load on CPU {cpus[1]}")
    print(f"{'second CPU':<20} {'p50 ms':>8} {'mean ms':>8} {'fps vs alone':>13}")
    for name, ms in samples.items():
        print(
            f"{name:<20} {statistics.median(ms):8.2f} {statistics.mean(ms):8.2f} "
            f"{alone / statistics.mean(ms):13.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
