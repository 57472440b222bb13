"""Try a candidate model in a child process with memory and time limits, before the agent
loads it.

The candidate has passed verify.py, so it is signed and fits the config, but a signed model can
still crash its runtime in native code, hang, eat all memory or output NaN; any of those inside
the agent would take the device down with it. trial_child.py loads and runs it instead, under
RLIMIT_AS (an address-space cap: the child's allocations fail, the agent's do not) and a wall
clock after which the child is killed. Whatever happens, ``run_trial`` returns a TrialReport
whose ``reason`` says in words why the model was refused.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

#: The child, run with the agent's own interpreter so it sees the same packages.
CHILD = (sys.executable, "-m", "edge_agent.updates.trial_child")
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 1024
MIB = 1 << 20
#: Characters of the child's stderr quoted in a reason: the end holds the error.
STDERR_TAIL_CHARS = 400
#: Words in the child's stderr that point at the memory limit (Python, OpenBLAS, the loader).
MEMORY_WORDS = ("MemoryError", "Memory allocation", "failed to map segment", "bad_alloc")
#: One thread per library in the child: each OpenBLAS or OpenMP thread reserves address space,
#: which RLIMIT_AS counts, and the trial runs with one inference thread anyway.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
#: What the crash interrupted, by the last phase the child reported.
PHASE_WORDS = {
    None: "the trial crashed before loading the model",
    "load": "the model's loader crashed",
    "run": "the model crashed while running",
}


@dataclass(frozen=True)
class TrialReport:
    ok: bool
    reason: str | None  # None when ok
    latency_ms_p50: float | None  # per frame: pre-processing, inference and decoding
    detections_per_frame: float
    frames: int  # frames run to the end


def _limit(pid: int, memory_mb: int) -> None:
    """Cap the child's address space and core dumps from outside.

    Not ``preexec_fn``: Python documents it as unsafe in a process with threads (the child can
    deadlock before exec), and the agent runs many. The child reads its request before it
    imports or loads anything heavy, so the limits are in place before the model is touched.
    """
    limit = memory_mb * MIB
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))  # a crashing model leaves no core
    except ProcessLookupError:
        pass  # it is gone already: its exit status tells why


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _parse(stdout: str) -> tuple[str | None, dict[str, Any] | None]:
    """(last phase reached, the result line) from the child's stdout."""
    phase, result = None, None
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a native library printing to stdout
        if isinstance(item, dict) and "phase" in item:
            phase = item["phase"]
        elif isinstance(item, dict) and "ok" in item:
            result = item
    return phase, result


def _failed(reason: str) -> TrialReport:
    return TrialReport(False, reason, None, 0.0, 0)


def _tail(stderr: str) -> str:
    text = stderr.strip()
    return f": {text[-STDERR_TAIL_CHARS:]}" if text else ""


def _report(
    returncode: int, stdout: str, stderr: str, memory_mb: int, timeout_s: float
) -> TrialReport:
    phase, result = _parse(stdout)
    if returncode < 0:
        return _failed(f"{PHASE_WORDS.get(phase, PHASE_WORDS['run'])} ({_signal_name(returncode)})")
    if result is None:
        how = f"exited with status {returncode}" if returncode else "printed no verdict"
        memory = " (perhaps the memory limit)" if any(w in stderr for w in MEMORY_WORDS) else ""
        words = PHASE_WORDS.get(phase, PHASE_WORDS["run"])
        return _failed(f"{words}: the trial {how}{memory}{_tail(stderr)}")
    reason = result.get("reason")
    if not result.get("ok") and reason and reason.startswith("ran out of memory"):
        reason = f"{reason} (limit {memory_mb} MB)"
    return TrialReport(
        bool(result.get("ok")),
        None if result.get("ok") else str(reason or "the trial failed"),
        result.get("latency_ms_p50"),
        float(result.get("detections_per_frame") or 0.0),
        int(result.get("frames") or 0),
    )


def run_trial(
    bundle_dir: Path,
    runtime: str | None,
    options: BaseModel | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    command: Sequence[str] = CHILD,
) -> TrialReport:
    """Load and run the bundle at ``bundle_dir`` in a child; the verdict, never an exception.

    ``runtime`` None means the bundle's model format; ``options`` that runtime's options model
    (the agent config's). ``command`` is the child to run (tests substitute one that crashes).
    """
    request = {
        "bundle": str(Path(bundle_dir).resolve()),
        "runtime": runtime,
        "options": None if options is None else options.model_dump(mode="json"),
    }
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": _pythonpath()}
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # killed as a group: nothing it started outlives the trial
    )
    _limit(proc.pid, memory_mb)
    try:
        stdout, stderr = proc.communicate(json.dumps(request), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return _failed(f"took longer than {timeout_s:g} s (the trial's limit); killed")
    return _report(proc.returncode, stdout, stderr, memory_mb, timeout_s)


def _pythonpath() -> str:
    """The child imports edge_agent from where this agent did, even when run from a checkout."""
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root
