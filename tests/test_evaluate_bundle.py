"""`edge-trainer evaluate BUNDLE`: a bundle scored through the agent's own Predictor.

The bundles are hand-built ONNX models whose scores are known exactly (tools/toy_models.py): a
multilabel "colour present" classifier whose logit per channel is 8 * (mean channel - 0.5), so
a uniform image of channel value v scores sigmoid(8 * (v / 255 - 0.5)) for that label, and the
colour-blocks detector. The expected figures below are worked out by hand from those scores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.bundle import write_manifest
from tools.toy_models import COLOUR_LABELS, colour_blocks_bundle, mean_colour_classifier
from trainer.cli import main
from trainer.datasets import Box, Dataset, Sample, save
from trainer.evaluate import default_bundle_out, evaluate_bundle

#: Logit gain of the toy classifier: 8 * (v / 255 - 0.5) spans -4..4 over a channel.
GAIN = 8.0
#: (RGB colour of a uniform image, its labels). Red: positives 255, 200, 110; a false 140.
IMAGES: list[tuple[tuple[int, int, int], list[str]]] = [
    ((255, 0, 0), ["red"]),
    ((0, 255, 0), ["green"]),
    ((200, 200, 0), ["red", "green"]),
    ((0, 0, 255), ["blue"]),
    ((140, 0, 140), ["blue"]),
    ((0, 0, 0), []),
    ((110, 0, 0), ["red"]),
]
#: The bundle's thresholds: red its own, green and blue fall back to ``score``.
THRESHOLDS = {"score": 0.7, "per_class": {"red": 0.5}}


def toy_score(value: float) -> float:
    return float(1.0 / (1.0 + np.exp(-GAIN * (value / 255.0 - 0.5))))


def colour_bundle(out: Path, multilabel: bool = True) -> Path:
    """mean_colour_classifier with weights GAIN * I and mean 0.5: logit_c = GAIN * (m_c - 0.5)."""
    out.mkdir(parents=True)
    mean_colour_classifier(out / "model.onnx", 32, np.eye(3, dtype=np.float32) * GAIN)
    manifest = {
        "schema": "edgesight.bundle/1", "name": "colours", "version": 3, "task": "classify",
        "multilabel": multilabel, "labels": COLOUR_LABELS,
        "model": {"file": "model.onnx", "format": "onnx", "precision": "fp32"},
        "input": {"name": "images", "width": 32, "height": 32, "layout": "NCHW",
                  "dtype": "float32", "color": "RGB", "mean": [0.5, 0.5, 0.5],
                  "std": [1.0, 1.0, 1.0], "resize": "stretch"},
        "decoder": {"type": "sigmoid" if multilabel else "softmax", "output": "logits"},
        "thresholds": THRESHOLDS, "files": {"model.onnx": ""},
    }  # fmt: skip
    write_manifest(out, manifest)
    return out


def colour_dataset(
    root: Path,
    images: list[tuple[tuple[int, int, int], list[str]]] = IMAGES,
    split: str = "val",
    fmt: str = "multilabel",
    classes: tuple[str, ...] = tuple(COLOUR_LABELS),
) -> Path:
    """A dataset of uniform PNGs (lossless: the scores stay exact), multilabel CSV or folders."""
    samples = []
    for i, ((r, g, b), labels) in enumerate(images):
        path = root / "src" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((40, 48, 3), (b, g, r), np.uint8))
        samples.append(Sample(path, 48, 40, labels=list(labels), split=split))
    multilabel = fmt == "multilabel"
    save(Dataset("classify", list(classes), samples, multilabel=multilabel), root / fmt, fmt)
    return root / fmt


def test_multilabel_bundle_figures_are_the_agents(tmp_path: Path) -> None:
    bundle = colour_bundle(tmp_path / "colours")
    report = evaluate_bundle(bundle, colour_dataset(tmp_path / "data"), threads=1)
    assert report["images"] == "val" and report["model"] == "colours@3"
    assert report["format"] == "onnx" and report["runtime"] == "onnx"
    m = report["metrics"]
    red, green, blue = (m["per_class"][k] for k in COLOUR_LABELS)
    # red ranked: 255 (yes), 200 (yes), 140 (no), 110 (yes), zeros (no): AP (1 + 1 + 3/4) / 3.
    assert red["ap"] == pytest.approx(11 / 12)
    # At the bundle's own thresholds: red 0.5 keeps 255, 200, 140 -> P 2/3, R 2/3;
    assert (red["threshold"], red["precision"], red["recall"]) == pytest.approx((0.5, 2 / 3, 2 / 3))
    # green and blue fall back to score 0.7: blue's 140 (0.6) is missed -> R 1/2.
    assert (green["threshold"], green["precision"], green["recall"]) == pytest.approx((0.7, 1, 1))
    assert (blue["precision"], blue["recall"], blue["support"]) == pytest.approx((1, 0.5, 2))
    assert m["threshold"] == {"red": 0.5, "green": 0.7, "blue": 0.7}
    assert m["mAP"] == pytest.approx((11 / 12 + 1 + 1) / 3)
    # Best F1 for red keeps 110 too (P 3/4, R 1); its margin threshold is the middle of the gap
    # down to the negatives' 0 in log-odds: the score of a channel value of 55.
    best = red["recommended"]
    assert best["threshold"] == pytest.approx(toy_score(110), abs=1e-6)
    assert best["f1"] == pytest.approx(6 / 7)
    assert report["recommended_thresholds"]["red"] == pytest.approx(toy_score(55), abs=1e-4)
    assert report["bundle_thresholds"] == THRESHOLDS
    assert report["latency_ms_p50"] > 0
    written = json.loads((default_bundle_out(bundle) / "report.json").read_text())
    assert written == report
    assert (tmp_path / "colours-eval" / "pr_curves").is_dir()


def test_one_threshold_for_every_label_overrides_the_bundles(tmp_path: Path) -> None:
    report = evaluate_bundle(
        colour_bundle(tmp_path / "b"), colour_dataset(tmp_path / "d"), tmp_path / "r",
        threads=1, threshold=0.3,
    )  # fmt: skip
    red = report["metrics"]["per_class"]["red"]
    assert report["metrics"]["threshold"] == 0.3
    assert (red["precision"], red["recall"]) == pytest.approx((3 / 4, 1))  # 110 scores 0.365


def test_cli_prints_per_label_figures_for_an_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGESIGHT_BUNDLE_CACHE", str(tmp_path / "cache"))  # unpacked here
    bundle = colour_bundle(tmp_path / "colours")
    archive = tmp_path / "colours-v3.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for file in sorted(bundle.iterdir()):
            tar.add(file, arcname=file.name)
    data = colour_dataset(tmp_path / "data")
    assert main(["evaluate", str(archive), "--data", str(data), "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    report_path = tmp_path / "colours-v3-eval" / "report.json"
    assert out[0].startswith("mAP 0.972, macro F1 ") and out[0].endswith(f"-> {report_path}")
    assert "at the bundle's per-label thresholds on 7 images (val)" in out[0]
    assert out[1].split() == ["class", "AP", "threshold", "precision", "recall", "F1", "support"]
    assert out[2].split() == ["red", "0.917", "0.5", "0.667", "0.667", "0.667", "3"]
    assert out[-1].startswith("thresholds from this evaluation (thresholds.per_class): red 0.")
    assert json.loads(report_path.read_text())["bundle"] == str(archive)
    assert any((tmp_path / "cache").iterdir())


def test_cli_refuses_data_that_does_not_fit_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = colour_dataset(tmp_path / "data")
    softmax = colour_bundle(tmp_path / "softmax", multilabel=False)
    assert main(["evaluate", str(softmax), "--data", str(data)]) == 2
    assert "a multilabel dataset, but the bundle's classifier gives one label" in (
        capsys.readouterr().err
    )
    cyan = [((255, 0, 0), ["red"]), ((0, 255, 255), ["green", "blue", "cyan"])]
    extra = colour_dataset(tmp_path / "extra", cyan, classes=(*COLOUR_LABELS, "cyan"))
    assert main(["evaluate", str(colour_bundle(tmp_path / "ml")), "--data", str(extra)]) == 2
    assert "classes ['cyan'] are not among the bundle's labels" in capsys.readouterr().err
    assert main(["evaluate", str(softmax), "--data", str(data), "--device", "cpu"]) == 2
    assert "--device is for runs" in capsys.readouterr().err
    (softmax / "model.onnx").write_bytes(b"tampered")
    assert main(["evaluate", str(softmax), "--data", str(data)]) == 2
    assert "model.onnx" in capsys.readouterr().err  # the sha256 check names the file


def test_multiclass_bundle_gives_accuracy_and_the_confusion_matrix(tmp_path: Path) -> None:
    one_label = [(c, ls) for c, ls in IMAGES if len(ls) == 1]  # 255 red ... 110 red
    data = colour_dataset(tmp_path / "data", one_label, split="test", fmt="folders")
    report = evaluate_bundle(colour_bundle(tmp_path / "b", multilabel=False), data, threads=1)
    assert report["images"] == "test"
    # (140, 0, 140) is blue, but red and blue tie on it: argmax takes red, the first.
    assert report["metrics"]["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert report["metrics"]["accuracy"] == pytest.approx(4 / 5)


def test_detector_bundle_gives_coco_map(tmp_path: Path) -> None:
    """The colour-blocks detector finds 32 px blocks on a 16 px grid: boxes it can hit exactly."""
    samples = []
    root = tmp_path / "data"
    for i, (x, y, colour) in enumerate([(32, 32, (0, 0, 255)), (96, 64, (255, 0, 0))]):
        image = np.full((160, 160, 3), 60, np.uint8)
        image[y : y + 32, x : x + 32] = colour
        path = root / "src" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
        label = "red" if colour == (0, 0, 255) else "blue"  # BGR
        box = Box((x, y, x + 32, y + 32), label)
        samples.append(Sample(path, 160, 160, boxes=[box], split="val"))
    save(Dataset("detect", list(COLOUR_LABELS), samples), root / "coco", "coco")
    report = evaluate_bundle(colour_blocks_bundle(tmp_path / "blocks"), root / "coco", threads=1)
    assert report["task"] == "detect"
    assert report["metrics"]["mAP50"] == pytest.approx(1.0)
    assert report["metrics"]["per_class"]["red"]["ground_truths"] == 1


def test_scoring_a_bundle_needs_no_torch(tmp_path: Path) -> None:
    """A bundle is scored by edge_agent's runtime: a machine without the train extra's torch
    can evaluate the bundle it runs."""
    bundle, data = colour_bundle(tmp_path / "b"), colour_dataset(tmp_path / "d")
    probe = (
        "import sys; from trainer.evaluate import evaluate_bundle; "
        f"evaluate_bundle({str(bundle)!r}, {str(data)!r}, {str(tmp_path / 'r')!r}, threads=1); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert (tmp_path / "r" / "report.json").is_file()
