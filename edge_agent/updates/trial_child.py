"""The trial of a candidate model, in a child: ``python -m edge_agent.updates.trial_child``.

A model file is native code's input (onnxruntime, TFLite parse and run it), so a hostile or
broken one can crash, hang or eat memory; here that costs a child, not the agent. The parent
(trial.py) sets the limits and reads stdout: one JSON line per phase reached
(``{"phase": "load"}``, ``{"phase": "run"}``) so a crash can be placed, then one result line
``{"ok": bool, "reason": str | null, "latency_ms_p50": float, "detections_per_frame": float,
"frames": int}``. The request comes on stdin: ``{"bundle": path, "runtime": name,
"options": {...} | null}``.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

TRIAL_DIR = "trial"
EXPECTED = "expected.json"
#: Synthetic frames when the bundle brings none: a camera's size, not the model's.
SYNTHETIC_SHAPE = (240, 320, 3)
SYNTHETIC_SEED = 13
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: How an allocation refused by RLIMIT_AS shows in native libraries' errors (the dynamic loader,
#: C++'s std::bad_alloc, errno ENOMEM), besides Python's MemoryError.
OUT_OF_MEMORY_HINTS = ("failed to map segment", "bad_alloc", "Cannot allocate memory")
#: Other errors (not ValueError) count as out of memory when the peak address space came this
#: close to the limit: a library whose allocation failed may report anything (a SystemError).
NEAR_LIMIT_FRACTION = 0.75


@dataclass
class TrialFrame:
    name: str
    image: np.ndarray
    expect: dict[str, Any] | None  # {"top": label} or {"min_detections": n}


#: What a failure interrupted, by the last phase reached.
DOING = {None: "reading the bundle", "load": "loading the model", "run": "running the model"}
_reached: list[str] = []


def say(**fields: Any) -> None:
    if "phase" in fields:
        _reached.append(fields["phase"])
    print(json.dumps(fields), flush=True)


def synthetic_frames() -> list[TrialFrame]:
    """Grey, noise and a gradient: enough to see a model run, finite and shaped right."""
    import numpy as np

    w = SYNTHETIC_SHAPE[1]
    rng = np.random.default_rng(SYNTHETIC_SEED)
    ramp = np.linspace(0, 255, w, dtype=np.float32)[np.newaxis, :, np.newaxis]
    return [
        TrialFrame("grey", np.full(SYNTHETIC_SHAPE, 128, np.uint8), None),
        TrialFrame("noise", rng.integers(0, 256, SYNTHETIC_SHAPE, dtype=np.uint8), None),
        TrialFrame("gradient", np.broadcast_to(ramp, SYNTHETIC_SHAPE).astype(np.uint8), None),
    ]


def bundle_frames(bundle_dir: Path, listed: list[str]) -> list[TrialFrame]:
    """The bundle's own trial frames (files under trial/ listed in the manifest) with their
    expectations; ValueError naming the file when one cannot be used."""
    import cv2

    expected: dict[str, Any] = {}
    if f"{TRIAL_DIR}/{EXPECTED}" in listed:
        expected = json.loads((bundle_dir / TRIAL_DIR / EXPECTED).read_text(encoding="utf-8"))
        if not isinstance(expected, dict):
            raise ValueError(f"{TRIAL_DIR}/{EXPECTED}: expected a JSON object {{image: ...}}")
    frames = []
    for name in sorted(listed):
        if not name.startswith(f"{TRIAL_DIR}/") or not name.lower().endswith(IMAGE_SUFFIXES):
            continue
        short = name.removeprefix(f"{TRIAL_DIR}/")
        image = cv2.imread(str(bundle_dir / name), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{name}: not an image OpenCV can read")
        frames.append(TrialFrame(short, image, expected.get(short)))
    unknown = sorted(set(expected) - {f.name for f in frames})
    if unknown:
        raise ValueError(f"{TRIAL_DIR}/{EXPECTED} names images the bundle lacks: {unknown}")
    return frames


def _non_finite(outputs: dict[str, np.ndarray]) -> str | None:
    import numpy as np

    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "infinity"
            return f"outputs {what} (output {name!r})"
    return None


def _missed(frame: TrialFrame, predictions: Any, labels: list[str]) -> str | None:
    from edge_agent.types import Classifications

    expect = frame.expect or {}
    if "top" in expect:
        if not isinstance(predictions, Classifications):
            return f"{frame.name}: expected.json asks for a top label of a detector"
        top = labels[predictions.top(1)[0][0]]
        if top != expect["top"]:
            return f"{frame.name}: top label {top!r}, expected {expect['top']!r}"
    if "min_detections" in expect:
        count = len(predictions)
        if isinstance(predictions, Classifications) or count < int(expect["min_detections"]):
            return f"{frame.name}: {count} detections, expected at least {expect['min_detections']}"
    return None


def _options(runtime: str, raw: dict[str, Any] | None) -> Any:
    if raw is None:
        return None
    import importlib

    from edge_agent.runtimes import RUNTIMES

    entry = RUNTIMES[runtime]
    return getattr(importlib.import_module(entry.module), entry.options).model_validate(raw)


def _shapes(outputs: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    import numpy as np

    return {name: tuple(np.shape(value)) for name, value in outputs.items()}


def _run(predictor: Any, bundle: Any) -> tuple[str | None, list[float], list[int]]:
    """(reason or None, latency per frame in ms, detections per frame) over the trial frames.

    A blank frame first, checked against the manifest as the agent does at start
    (``Predictor.prove``); then every frame's outputs must be finite and shaped like the blank
    frame's. Value-range heuristics are not applied per frame: they hold on blank frames only.
    """
    import numpy as np

    from edge_agent.predictor import describe_problems
    from edge_agent.types import Classifications

    spec = bundle.manifest.input
    blank = predictor.infer(predictor.prepare(np.zeros((spec.height, spec.width, 3), np.uint8)))
    reason = _non_finite(blank.outputs)
    if reason is not None:
        return reason, [], []
    problems = predictor.prove()
    if problems:
        return describe_problems(bundle, problems), [], []
    shapes = _shapes(blank.outputs)
    frames = bundle_frames(bundle.path, list(bundle.manifest.files)) or synthetic_frames()
    latencies: list[float] = []
    detections: list[int] = []
    for frame in frames:
        t0 = time.perf_counter()
        inferred = predictor.infer(predictor.prepare(frame.image))
        reason = _non_finite(inferred.outputs)
        if reason is None and _shapes(inferred.outputs) != shapes:
            got = _shapes(inferred.outputs)
            reason = f"output shapes {got} differ from the blank frame's {shapes}"
        if reason is not None:
            return f"{frame.name}: {reason}", latencies, detections
        predictions = predictor.finish(inferred).predictions
        latencies.append((time.perf_counter() - t0) * 1000)
        detections.append(0 if isinstance(predictions, Classifications) else len(predictions))
        reason = _missed(frame, predictions, bundle.manifest.labels)
        if reason is not None:
            return reason, latencies, detections
    return None, latencies, detections


def trial(request: dict[str, Any]) -> dict[str, Any]:
    """Load, prove and run the bundle; the result line's fields."""
    from edge_agent.bundle import load_bundle
    from edge_agent.predictor import Predictor

    bundle = load_bundle(request["bundle"])
    runtime = request.get("runtime") or bundle.manifest.model.format
    say(phase="load")
    predictor = Predictor(bundle, runtime, 1, None, _options(runtime, request.get("options")))
    say(phase="run")
    try:
        reason, latencies, detections = _run(predictor, bundle)
    finally:
        predictor.close()
    return {
        "ok": reason is None,
        "reason": reason,
        "latency_ms_p50": round(statistics.median(latencies), 3) if latencies else None,
        "detections_per_frame": round(sum(detections) / len(detections), 3) if detections else 0,
        "frames": len(latencies),
    }


def _near_memory_limit() -> bool:
    """True when the peak address space (/proc, Linux) came near RLIMIT_AS."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return False
    peak = next((line.split()[1] for line in status.splitlines() if line.startswith("VmPeak")), 0)
    return limit != resource.RLIM_INFINITY and int(peak) * 1024 >= NEAR_LIMIT_FRACTION * limit


def _verdict(exc: Exception) -> dict[str, Any]:
    """The result line for a failure: out of memory, or the error, with what it interrupted."""
    doing = DOING[_reached[-1] if _reached else None]
    hinted = any(h in str(exc) for h in OUT_OF_MEMORY_HINTS)
    # Our own errors (BundleError, a bad expected.json) are ValueErrors and say what they mean.
    native = not isinstance(exc, ValueError) and _near_memory_limit()
    if isinstance(exc, MemoryError) or hinted or native:
        return {"ok": False, "reason": f"ran out of memory {doing}", "frames": 0}
    return {"ok": False, "reason": f"failed {doing}: {type(exc).__name__}: {exc}", "frames": 0}


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        result = trial(request)
    except Exception as exc:  # any failure of the model or its files is the verdict, not a crash
        result = _verdict(exc)
    say(**result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
