"""Training: every registered model learns and round-trips through its checkpoint, resume picks
up at the right epoch, BatchNorm statistics get recomputed, presets move boxes with pixels, and
the train/evaluate commands fail with ``error:`` and exit 2 on bad input.

Kept tiny for 2-core CI: 64 px classifiers, a 128 px detector, a handful of synthetic images.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from torch.utils.data import DataLoader  # noqa: E402
from torchvision import tv_tensors  # noqa: E402

from trainer.commands import add_train_commands  # noqa: E402
from trainer.datasets import Dataset, Sample, load, save  # noqa: E402
from trainer.engine import batch_loss, recompute_bn_stats  # noqa: E402
from trainer.evaluate import evaluate  # noqa: E402
from trainer.models import (  # noqa: E402
    backbone_of,
    freeze_backbone,
    get_model,
    list_models,
    load_checkpoint,
    unfreeze_backbone,
)
from trainer.presets import get_preset  # noqa: E402
from trainer.synth import generate  # noqa: E402
from trainer.torchdata import ClassificationData, DetectionData, collate_detection  # noqa: E402
from trainer.train import train  # noqa: E402

DETECTOR = "ssdlite320_mobilenet_v3_large"
CLASSIFIERS = ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2"]
SIZE = {"classify": 64, "detect": 128}
TINY = {"batch_size": 4, "max_steps": 2, "bn_batches": 2, "preset": "light", "seed": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these nets are too small to gain from two, and on a busy 2-core box
    two spinning OpenMP threads made the tests 5x slower. Restored for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Shelf scenes (COCO, 10 images, 160 px) and their product crops (class folders)."""
    root = tmp_path_factory.mktemp("train-data")
    generate("shelf", 10, root / "scenes", "coco", size=(160, 160), val_fraction=0.3)
    generate("shelf", 4, root / "crops", "folders", size=(160, 160), val_fraction=0.25)
    return {"detect": root / "scenes", "classify": root / "crops"}


def _task(name: str) -> str:
    return "detect" if name == DETECTOR else "classify"


def _one_batch(name: str, data: dict[str, Path]):
    task = _task(name)
    ds = load(data[task])
    transform = get_preset("none", task, SIZE[task], train=False)
    if task == "detect":
        items = DetectionData(ds.samples[:4], ds.classes, transform)
        images, targets = collate_detection([items[i] for i in range(4)])
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]}
                   for t in targets]  # fmt: skip
        return ds, images, targets
    items = ClassificationData(ds.samples[:8], ds.classes, transform)
    images, targets = zip(*(items[i] for i in range(8)), strict=True)
    return ds, torch.stack(images), torch.stack(targets)


@pytest.mark.parametrize("name", [*CLASSIFIERS, DETECTOR])
def test_loss_decreases_on_a_fixed_batch(name, data):
    torch.manual_seed(0)
    ds, images, targets = _one_batch(name, data)
    task = _task(name)
    model = get_model(name, len(ds.classes), size=SIZE[task]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = batch_loss(model, images, targets, task, multilabel=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", [*CLASSIFIERS, DETECTOR])
def test_run_folder_and_checkpoint_round_trip(name, data, tmp_path):
    task = _task(name)
    run = train(task, name, data[task], tmp_path / "run", 1, size=SIZE[task], **TINY)
    for rel in ("config.json", "train.log", "metrics.csv", "best.pt", "loss.png", "metric.png",
                "checkpoints/epoch_001.pt"):  # fmt: skip
        assert (run / rel).is_file(), rel
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == name and config["size"] == SIZE[task] and config["epochs_run"] == 1
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    # The checkpoint rebuilt from config.json scores exactly what training measured.
    report = evaluate(run, data[task])
    assert report["metrics"][config["metric"]] == pytest.approx(float(rows[0]["val_metric"]),
                                                                abs=1e-5)  # fmt: skip
    assert (run / "eval" / "report.json").is_file()
    # Every task gets the per-class best-F1 thresholds export would set (docs/training.md).
    assert set(report["recommended_thresholds"]) == set(config["labels"])
    plots = ["pr_curves/can.png"] if task == "detect" else ["confusion_matrix.png"]
    assert all(p in report["plots"] for p in plots)
    # Loading twice gives the same outputs: nothing random survives into eval mode.
    a, _ = load_checkpoint(run / "best.pt")
    b, _ = load_checkpoint(run / "checkpoints" / "epoch_001.pt")
    x = torch.rand(2, 3, SIZE[task], SIZE[task])
    with torch.no_grad():
        out_a, out_b = (m(list(x)) if task == "detect" else m(x) for m in (a, b))
    if task == "detect":
        torch.testing.assert_close(out_a[0]["boxes"], out_b[0]["boxes"])
    else:
        torch.testing.assert_close(out_a, out_b)


def test_detector_net_size_is_the_model_transform():
    model = get_model(DETECTOR, 4, size=160)
    assert model.transform.min_size == (160,) and model.transform.max_size == 160
    assert model.transform.fixed_size == (160, 160)


def test_resume_continues_at_the_next_epoch(data, tmp_path):
    run = tmp_path / "run"
    train("classify", "mobilenet_v3_small", data["classify"], run, 2, size=64, **TINY)
    train("classify", "ignored", "ignored", run, 3, resume=True, max_steps=2, bn_batches=2)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert "resuming" in (run / "train.log").read_text()
    ckpt = torch.load(run / "checkpoints" / "epoch_003.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["scheduler"]["last_epoch"] == 3 * 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_002.pt", "epoch_003.pt"
    ]  # fmt: skip


def test_recompute_bn_stats_replaces_running_statistics():
    model = get_model("mobilenet_v3_small", 3, size=64)
    bn = model.features[0][1]
    images = [(torch.rand(4, 3, 64, 64) * 3 + 1, torch.zeros(4)) for _ in range(3)]
    used = recompute_bn_stats(model, DataLoader(images, batch_size=None), batches=2)
    assert used == 2
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert int(bn.num_batches_tracked) == 2 and bn.momentum == 0.01 and model.training
    # momentum None averages the batches equally: the first layer's mean is their mean.
    conv = model.features[0][0]
    with torch.no_grad():
        means = [conv(x).mean(dim=(0, 2, 3)) for x, _ in images[:2]]
    torch.testing.assert_close(bn.running_mean, (means[0] + means[1]) / 2)


def test_weights_file_loads_what_matches_and_replaces_the_head(tmp_path):
    imagenet = get_model("mobilenet_v3_small", 1000)
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pt")
    ours = get_model("mobilenet_v3_small", 3, weights=tmp_path / "imagenet.pt")
    torch.testing.assert_close(ours.features[3].block[0][0].weight,
                               imagenet.features[3].block[0][0].weight)  # fmt: skip
    assert ours.classifier[-1].out_features == 3
    backbone = get_model("mobilenet_v3_large", 1000)
    torch.save({"model": backbone.state_dict()}, tmp_path / "large.pt")
    det = get_model(DETECTOR, 2, size=128, weights=tmp_path / "large.pt")
    assert det.reduced_tail is False  # the ImageNet file has the full tail
    torch.testing.assert_close(backbone_of(det)[0][0][0].weight, backbone.features[0][0].weight)
    freeze_backbone(det)
    assert not any(p.requires_grad for p in backbone_of(det).parameters())
    assert all(p.requires_grad for p in det.head.parameters())
    unfreeze_backbone(det)
    assert all(p.requires_grad for p in backbone_of(det).parameters())


def test_detection_preset_moves_boxes_with_pixels():
    image = tv_tensors.Image(torch.zeros(3, 100, 200, dtype=torch.uint8))
    image[:, 20:60, 10:50] = 255
    target = {"boxes": tv_tensors.BoundingBoxes([[10.0, 20.0, 50.0, 60.0]], format="XYXY",
                                                canvas_size=(100, 200)),
              "labels": torch.tensor([1])}  # fmt: skip
    out, t = get_preset("none", "detect", 50, train=False)(image, target)
    assert out.shape == (3, 50, 50) and out.dtype == torch.float32
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor),
                               torch.tensor([[2.5, 10.0, 12.5, 30.0]]))  # fmt: skip
    torch.manual_seed(0)
    strong = get_preset("strong", "detect", 64)
    for _ in range(10):
        out, t = strong(image, target)
        boxes = t["boxes"].as_subclass(torch.Tensor)
        assert len(boxes) == len(t["labels"])
        assert (boxes >= 0).all() and (boxes <= 64).all()


def test_multilabel_run_uses_map(data, tmp_path):
    ds = load(data["detect"])
    samples = [Sample(s.image_path, s.width, s.height, labels=sorted({b.label for b in s.boxes}))
               for s in ds.samples]  # fmt: skip
    multi = Dataset("classify", ds.classes, samples, multilabel=True)
    save(multi, tmp_path / "ml", "multilabel")
    run = train("classify", "mobilenet_v3_small", tmp_path / "ml", tmp_path / "run", 1,
                size=64, val_fraction=0.3, **TINY)  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["multilabel"] and config["metric"] == "mAP"
    assert config["val_source"] == "seeded split"
    report = evaluate(run, tmp_path / "ml")
    assert report["images"] == "val (the run's seeded split)"
    assert set(report["recommended_thresholds"]) == set(ds.classes)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet9000"], "unknown model 'resnet9000': expected one of ['mobilenet_v2'"),
        (["--data", "/nonexistent/data"], "/nonexistent/data: no such dataset"),
        (["--weights", "/nonexistent/w.pt"], "weights file not found: /nonexistent/w.pt"),
        (["--model", "mobilenet_v2"], "mobilenet_v2 is a classify model, not detect"),
        (["--preset", "wild"], "unknown preset 'wild'"),
    ],
)
def test_train_command_errors(argv, message, data, tmp_path, capsys):
    base = {"--task": "detect", "--model": DETECTOR, "--data": str(data["detect"])}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    code = _cli(["train", *flat, "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # a failed start leaves no half run folder


def test_evaluate_command_prints_once_per_class_and_takes_threads(data, tmp_path, capsys):
    run = train("classify", "mobilenet_v3_small", data["classify"], tmp_path / "run", 1,
                size=64, **TINY)  # fmt: skip
    capsys.readouterr()
    try:
        argv = ["evaluate", str(run), "--data", str(data["classify"]), "--threads", "2"]
        assert _cli(argv) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # the module's one_thread fixture
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert both.count("accuracy ") == 1, both  # the summary once, not also as a log line
    lines = captured.out.splitlines()
    assert lines[0].startswith("accuracy ") and lines[0].endswith(str(run / "eval" / "report.json"))
    assert lines[1].split() == ["class", "precision", "recall", "F1", "support"]
    labels = json.loads((run / "config.json").read_text())["labels"]
    assert [line.split()[0] for line in lines[2:]] == labels
    assert "Traceback" not in captured.err


def test_resume_and_evaluate_command_errors(data, tmp_path, capsys):
    assert _cli(["train", "--epochs", "2", "--out", str(tmp_path), "--resume"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert _cli(["evaluate", str(tmp_path / "nope"), "--data", str(data["detect"])]) == 2
    assert "no such run folder or checkpoint" in capsys.readouterr().err
    assert _cli(["evaluate", str(tmp_path), "--data", str(data["detect"])]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_commands_module_does_not_import_torch():
    probe = "import sys, trainer.commands, trainer.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_list_models():
    assert list_models("classify") == sorted(CLASSIFIERS)
    assert list_models("detect") == [DETECTOR]
