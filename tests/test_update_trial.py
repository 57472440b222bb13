"""run_trial: a candidate loaded and run in a child with limits, on tools/bad_models.py's
bundles, and children that crash, hang or run out of memory."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import write_manifest
from edge_agent.runtimes.onnx import OnnxOptions
from edge_agent.updates.trial import run_trial
from tests.helpers.models import classifier_bundle
from tools.bad_models import build

KEY = Ed25519PrivateKey.generate()


def test_a_good_model_passes_on_its_own_trial_frames(tmp_path: Path) -> None:
    report = run_trial(build("good", tmp_path / "b", KEY), "onnx", OnnxOptions())
    assert report.ok and report.reason is None
    assert report.frames == 1 and report.detections_per_frame == 1.0
    assert report.latency_ms_p50 is not None and report.latency_ms_p50 > 0


def test_without_trial_frames_synthetic_ones_are_run(tmp_path: Path) -> None:
    report = run_trial(build("good", tmp_path / "b", KEY, trial=False), None, None)
    assert report.ok and report.frames == 3  # grey, noise, gradient


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("nan", "outputs NaN (output 'scores')"),
        ("blind", "red_block.png: 0 detections, expected at least 1"),
        ("loader_crash", "failed loading the model: ModelRuntimeError"),
    ],
)
def test_broken_models_are_refused_with_words(tmp_path: Path, kind: str, words: str) -> None:
    report = run_trial(build(kind, tmp_path / "b", KEY), None, None)
    assert not report.ok
    assert report.reason is not None and words in report.reason


def _classifier_with_trial(tmp_path: Path, top: str) -> Path:
    out = classifier_bundle(tmp_path / "cls")
    (out / "trial").mkdir()
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[..., 2] = 255  # BGR: pure red
    cv2.imwrite(str(out / "trial" / "red.png"), frame)
    (out / "trial" / "expected.json").write_text(json.dumps({"red.png": {"top": top}}))
    body = json.loads((out / "manifest.json").read_text())
    body["files"].update({"trial/red.png": "", "trial/expected.json": ""})
    write_manifest(out, body)
    return out


def test_classifier_expectations(tmp_path: Path) -> None:
    assert run_trial(_classifier_with_trial(tmp_path / "a", "red"), None, None).ok
    report = run_trial(_classifier_with_trial(tmp_path / "b", "blue"), None, None)
    assert report.reason == "red.png: top label 'red', expected 'blue'"


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", "import json, os, signal, sys, time\n" + code]


def test_a_crash_in_the_loader_is_named_with_its_signal(tmp_path: Path) -> None:
    code = "print(json.dumps({'phase': 'load'}), flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    report = run_trial(tmp_path, None, None, command=_child(code))
    assert report.reason == "the model's loader crashed (SIGSEGV)"


def test_a_crash_while_running(tmp_path: Path) -> None:
    code = "print(json.dumps({'phase': 'run'}), flush=True); os.abort()"
    report = run_trial(tmp_path, None, None, command=_child(code))
    assert report.reason == "the model crashed while running (SIGABRT)"


def test_a_hang_is_killed_at_the_deadline(tmp_path: Path) -> None:
    t0 = time.monotonic()
    report = run_trial(tmp_path, None, None, timeout_s=1, command=_child("time.sleep(60)"))
    assert time.monotonic() - t0 < 10
    assert report.reason == "took longer than 1 s (the trial's limit); killed"


def test_a_child_dying_without_a_verdict(tmp_path: Path) -> None:
    code = "sys.stdin.read(); sys.stderr.write('boom'); sys.exit(3)"
    report = run_trial(tmp_path, None, None, command=_child(code))
    assert (
        report.reason
        == "the trial crashed before loading the model: the trial exited with status 3: boom"
    )


def test_the_memory_limit_applies_to_the_child(tmp_path: Path) -> None:
    """Allocating 400 MB under a 300 MB address-space limit fails in the child only."""
    code = (
        "sys.stdin.read(); print(json.dumps({'phase': 'run'}), flush=True)\n"
        "x = bytearray(400 << 20)"
    )
    report = run_trial(tmp_path, None, None, memory_mb=300, command=_child(code))
    assert report.reason is not None and "(perhaps the memory limit)" in report.reason
    assert report.reason.startswith(
        "the model crashed while running: the trial exited with status 1"
    )


def test_the_real_child_reports_running_out_of_memory(tmp_path: Path) -> None:
    report = run_trial(build("good", tmp_path / "b", KEY), None, None, memory_mb=250)
    assert report.reason is not None and report.reason.startswith("ran out of memory")
    assert report.reason.endswith("(limit 250 MB)")
