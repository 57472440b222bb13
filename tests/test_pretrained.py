"""Named starting weights (``--weights imagenet|coco``): torchvision's file names in a temporary
torch cache, the tensors that reach the model are the file's, the class head starts afresh, and
a missing, wrong or unreachable file is an error saying what to do.

No network: each "torchvision file" is a state dict these tests make (torchvision's own model
built with ``weights=None``, every tensor perturbed by a seeded generator, so no value can match
by accident) saved under the exact name torch's cache would hold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from torchvision.models import mobilenet_v3_large, mobilenet_v3_small  # noqa: E402
from torchvision.models.detection import ssdlite320_mobilenet_v3_large  # noqa: E402

from trainer import pretrained  # noqa: E402
from trainer.commands import add_train_commands  # noqa: E402
from trainer.errors import InputError  # noqa: E402
from trainer.pretrained import ALLOW_ENV, named_weights, start_model  # noqa: E402
from trainer.synth import generate  # noqa: E402
from trainer.train import train  # noqa: E402

DETECTOR = "ssdlite320_mobilenet_v3_large"
LABELS = ["deer", "boar", "fox"]
COCO_FILE = "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
LARGE_FILE = "mobilenet_v3_large-8738ca79.pth"  # the detector's ImageNet backbone
SMALL_FILE = "mobilenet_v3_small-047dcff4.pth"
HEAD = "head.classification_head."


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty torch cache ($TORCH_HOME/hub/checkpoints), downloads off, one torch thread."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    yield folder
    torch.set_num_threads(before)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state dict with seeded noise on every float tensor (variances kept > 0)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            value = value + 0.1 * torch.randn(value.shape, generator=gen)
            value = value.abs() + 0.5 if key.endswith("running_var") else value
        out[key] = value
    return out


def _coco_state() -> dict[str, torch.Tensor]:
    # What torchvision builds for weights=COCO_V1: 91 classes and, with no backbone weights
    # named, the reduced tail (torchvision's ssdlite320_mobilenet_v3_large).
    return _perturbed(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                    num_classes=91), seed=1)  # fmt: skip


def test_coco_keeps_all_but_the_class_head(cache):
    state = _coco_state()
    torch.save(state, cache / COCO_FILE)
    model, start = start_model(DETECTOR, LABELS, "coco", size=128)
    own = model.state_dict()
    kept = [k for k in state if not k.startswith(HEAD)]
    head = [k for k in state if k.startswith(HEAD)]
    assert kept and head and any(k.startswith("head.regression_head.") for k in kept)
    assert any(k.startswith("backbone.extra.") for k in kept)
    for key in kept:
        assert torch.equal(own[key], state[key]), key
    # The class head starts afresh for our 3 labels + background, depthwise layers included.
    floats = [k for k in head if state[k].is_floating_point()]
    assert not any(own[k].shape == state[k].shape and torch.equal(own[k], state[k])
                   for k in floats)  # fmt: skip
    last = model.head.classification_head.module_list[0][-1]
    assert last.out_channels == model.anchor_generator.num_anchors_per_location()[0] * 4
    assert model.reduced_tail is True  # follows the file
    assert start is not None and start.source == "coco"
    assert start.torchvision == "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1"
    assert start.url and start.url.endswith("/" + COCO_FILE)
    assert (start.loaded, start.reinitialised, start.skipped) == (len(kept), len(head), 0)
    assert start.file == str((cache / COCO_FILE).resolve())


def test_imagenet_gives_the_detector_its_backbone(cache):
    state = _perturbed(mobilenet_v3_large(weights=None), seed=2)
    torch.save(state, cache / LARGE_FILE)
    model, start = start_model(DETECTOR, LABELS, "imagenet", size=128)
    # SSDLite splits the MobileNet into feature maps, renaming every key: find each of the
    # file's (unique, perturbed) tensors among the backbone's by value.
    backbone = {t.numpy().tobytes() for t in model.backbone.features.state_dict().values()}
    features = [v for k, v in state.items() if k.startswith("features.") and v.is_floating_point()]
    assert len(features) > 100
    assert all(v.numpy().tobytes() in backbone for v in features)
    assert model.reduced_tail is False  # ImageNet MobileNetV3 has the full tail
    assert start is not None and start.source == "imagenet"
    assert start.torchvision == "MobileNet_V3_Large_Weights.IMAGENET1K_V1" and start.skipped == 0


@pytest.mark.parametrize("labels", [LABELS, [f"c{i}" for i in range(1000)]])
def test_imagenet_classifier_keeps_all_but_the_last_linear(cache, labels):
    state = _perturbed(mobilenet_v3_small(weights=None), seed=3)
    torch.save(state, cache / SMALL_FILE)
    model, start = start_model("mobilenet_v3_small", labels, "imagenet")
    own = model.state_dict()
    for key in state:
        if not key.startswith("classifier.3."):
            assert torch.equal(own[key], state[key]), key
    # Re-initialised even with 1000 labels, where ImageNet's rows would fit: they mean other
    # classes.
    assert model.classifier[-1].out_features == len(labels)
    assert not torch.equal(model.classifier[-1].bias, state["classifier.3.bias"][: len(labels)])
    assert start is not None and start.reinitialised == 2 and start.skipped == 0


def test_coco_is_refused_for_a_classifier():
    with pytest.raises(InputError, match=r"classifier.*use --weights imagenet"):
        named_weights("coco", "mobilenet_v3_small")


def test_missing_file_with_downloads_off_says_what_to_fetch_and_where(cache, data, tmp_path,
                                                                      capsys):  # fmt: skip
    url = named_weights("coco", DETECTOR).url
    with pytest.raises(InputError) as info:
        start_model(DETECTOR, LABELS, "coco", size=128)
    for part in (COCO_FILE, str(cache), url, "--download-weights", ALLOW_ENV):
        assert part in str(info.value)
    # The same from the command line: exit 2, one error line, no run folder.
    code = _cli(["train", "--task", "detect", "--model", DETECTOR, "--data", str(data),
                 "--weights", "coco", "--epochs", "1", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and COCO_FILE in err and url in err
    assert not (tmp_path / "run").exists()


def test_download_when_allowed_lands_in_the_cache_hash_checked(cache, tmp_path, monkeypatch):
    """torch's own download (a file:// URL here: no network) with its sha256 check."""
    source = tmp_path / "mirror"
    source.mkdir()
    torch.save(_coco_state(), source / "tmp.pth")
    digest = hashlib.sha256((source / "tmp.pth").read_bytes()).hexdigest()
    good = source / f"coco-{digest[:8]}.pth"
    (source / "tmp.pth").rename(good)
    bad = source / "coco-00000000.pth"
    bad.write_bytes(good.read_bytes())
    for path, works in ((bad, False), (good, True)):
        monkeypatch.setattr(pretrained.Named, "url", property(lambda _, p=path: p.as_uri()))
        monkeypatch.setenv(ALLOW_ENV, "1")
        if works:
            _, start = start_model(DETECTOR, LABELS, "coco", size=128)
            assert (cache / good.name).is_file() and start and start.file.endswith(good.name)
        else:
            with pytest.raises(InputError, match=r"downloading .* failed.*hash"):
                start_model(DETECTOR, LABELS, "coco", size=128)
            assert not (cache / bad.name).exists()


def test_local_file_keeps_working_and_the_head_follows_the_labels(tmp_path):
    state = _perturbed(mobilenet_v3_small(weights=None, num_classes=3), seed=4)
    torch.save(state, tmp_path / "bare.pt")
    model, start = start_model("mobilenet_v3_small", LABELS, tmp_path / "bare.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())  # head too
    assert start is not None and start.source == "file" and start.torchvision is None
    # One of our checkpoints of other labels: same shapes, but its head rows meant other classes.
    torch.save({"model": state, "config": {"labels": ["a", "b", "c"]}}, tmp_path / "other.pt")
    model, start = start_model("mobilenet_v3_small", LABELS, tmp_path / "other.pt")
    assert not torch.equal(model.classifier[-1].weight, state["classifier.3.weight"])
    assert start is not None and start.reinitialised == 2


def test_wrong_files_are_clear_errors(cache, tmp_path):
    (cache / COCO_FILE).write_text("not weights")
    with pytest.raises(InputError, match=f"{COCO_FILE}: not a torch weights file"):
        start_model(DETECTOR, LABELS, "coco", size=128)
    torch.save(_perturbed(mobilenet_v3_small(weights=None), seed=5), cache / COCO_FILE)
    with pytest.raises(InputError, match=r"not torchvision's SSDLite320.*do not fit.*fetch https"):
        start_model(DETECTOR, LABELS, "coco", size=128)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError, match="expected a state dict"):
        start_model("mobilenet_v3_small", LABELS, tmp_path / "list.pt")
    torch.save({"x.weight": torch.zeros(2)}, tmp_path / "alien.pt")
    with pytest.raises(InputError, match="none of its tensors fit mobilenet_v3_small"):
        start_model("mobilenet_v3_small", LABELS, tmp_path / "alien.pt")


@pytest.fixture
def data(tmp_path) -> Path:
    generate("trail", 6, tmp_path / "trail", "coco", size=(128, 128), val_fraction=0.34)
    return tmp_path / "trail"


def test_a_run_records_what_it_started_from(cache, data, tmp_path):
    torch.save(_coco_state(), cache / COCO_FILE)
    run = train("detect", DETECTOR, data, tmp_path / "run", 1, size=128, batch_size=2,
                max_steps=1, bn_batches=1, preset="none", weights="coco")  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["weights"] == "coco"
    start = config["start_weights"]
    assert start["source"] == "coco" and start["file"] == str((cache / COCO_FILE).resolve())
    assert start["torchvision"] == "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1"
    assert start["reinitialised"] > 0 and start["skipped"] == 0
    assert "kept all but the classification head" in (run / "train.log").read_text()
