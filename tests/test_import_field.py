"""``edge-trainer import-field``: field folders of two devices (written by the real collect
stage) merged into one training set: near-duplicates dropped, labels merged by name, pre-labels
kept, the result read by the trainer; bad folders named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.analytics.collect import CollectStage
from edge_agent.analytics.collect_options import CollectOptions
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext
from edge_agent.types import Classifications, Detections, Frame, Result
from trainer.cli import main
from trainer.datasets import DatasetError, load
from trainer.field_sets import dhash, hamming
from trainer.import_field import import_field

LABELS = ["red", "green", "blue"]
W, H = 160, 120
T0 = 1_790_000_000.0


def scene(n: int) -> np.ndarray:
    """A scene as a camera sees one: a lit gradient (no two neighbouring hash cells alike)
    and a few coloured objects, different for each ``n``."""
    rng = np.random.default_rng(n)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    gx, gy = rng.uniform(0.5, 1.0, 2) * rng.choice([-1, 1], 2)
    grey = 128 + gx * (xs - W / 2) + gy * (ys - H / 2)
    image = np.repeat(grey[..., None], 3, axis=2)
    for _ in range(4):
        x, y = rng.integers(0, W - 30), rng.integers(0, H - 30)
        image[y : y + 30, x : x + 30] = rng.integers(0, 256, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def device(root: Path, name: str, pictures: list[np.ndarray], labels: list[str] = LABELS,
           t0: float = T0) -> Path:  # fmt: skip
    """A device's state folder after its collect stage kept ``pictures`` (one box each)."""
    options = CollectOptions(sample_rate=0, min_interval_s=0)
    context = StageContext("cam", StatsRegistry(), tuple(labels), root / name / "sources" / "cam",
                           None, name)  # fmt: skip
    stage = CollectStage(options, context)
    for seq, picture in enumerate(pictures):
        det = Detections(
            np.array([[10, 10, 60, 50], [100, 60, 170, 130]], np.float32),
            np.array([0.5, 0.4], np.float32),
            np.array([seq % 3, 1], np.int32),
        )
        result = Result("cam", seq, t0 + seq, f"{name}-model", "detect", labels, (W, H), det)
        stage.process(result, Frame(picture, "cam", seq, t0 + seq))
    return root / name


def test_two_devices_merge_into_one_training_set(tmp_path: Path, capsys) -> None:
    shared = scene(99)
    a = device(tmp_path, "pi-a", [scene(1), scene(2), shared, scene(3)])
    brighter = np.clip(shared.astype(np.int16) + 4, 0, 255).astype(np.uint8)  # the same view
    b = device(tmp_path, "pi-b", [scene(4), brighter, scene(5)], t0=T0 + 60)
    # a device's field folder is a COCO set the trainer reads as it is
    assert len(load(a / "sources/cam/field").samples) == 4
    out = tmp_path / "train-set"
    code = main(["import-field", str(out), str(a), str(b), "--val-fraction", "0.3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "imported 6 images (1 near-duplicates dropped" in printed
    dataset = load(out, "coco")
    assert dataset.classes == LABELS and len(dataset.samples) == 6
    assert {s.split for s in dataset.samples} == {"train", "val"}
    docs = [json.loads(p.read_text()) for p in sorted((out / "annotations").glob("*.json"))]
    assert sorted(p.name for p in (out / "annotations").iterdir()) == [
        "instances_train.json", "instances_val.json"
    ]  # fmt: skip
    images = [i for d in docs for i in d["images"]]
    names = [i["file_name"] for i in images]
    assert len(set(names)) == 6 and {i["device"] for i in images} == {"pi-a", "pi-b"}
    # the older of the two near-identical frames stays: pi-a's, taken a minute before pi-b's
    assert sum(i["device"] == "pi-a" for i in images) == 4
    anns = [a for d in docs for a in d["annotations"]]
    assert len(anns) == 12 and all(a["score"] in (0.5, 0.4) for a in anns)
    # the box past the 160 px edge was clipped to the image
    assert max(a["bbox"][0] + a["bbox"][2] for a in anns) <= W
    assert main(["inspect", str(out)]) == 0


def test_near_duplicates_follow_the_distance_option(tmp_path: Path) -> None:
    shared = scene(7)
    marked = shared.copy()
    marked[50:70, 70:90] = 255  # a small change in view
    a = device(tmp_path, "a", [shared, scene(8)])
    b = device(tmp_path, "b", [marked], t0=T0 + 10)
    first, other = sorted(a.rglob("*.jpg"), key=lambda p: p.name)
    (second,) = b.rglob("*.jpg")
    bits = int(hamming(dhash(first), dhash(second)))
    assert 1 <= bits < int(hamming(dhash(first), dhash(other)))
    near = import_field(tmp_path / "o1", [a, b], val_fraction=0, max_distance=bits)
    assert (near.images, near.duplicates) == (2, 1)
    assert near.per_folder == {str(a / "sources/cam/field"): (2, 0),
                               str(b / "sources/cam/field"): (1, 1)}  # fmt: skip
    far = import_field(tmp_path / "o2", [a, b], val_fraction=0, max_distance=bits - 1)
    assert (far.images, far.duplicates) == (3, 0)
    # no split: CVAT's "default" subset, which the trainer reads as unsplit
    assert (tmp_path / "o1" / "annotations" / "instances_default.json").is_file()
    assert {s.split for s in load(tmp_path / "o1").samples} == {""}


def test_different_labels_are_refused_or_mapped(tmp_path: Path) -> None:
    a = device(tmp_path, "a", [scene(1)])
    b = device(tmp_path, "b", [scene(2)], labels=["red", "lime", "blue"])
    with pytest.raises(DatasetError, match=r"different labels: .*\['red', 'lime', 'blue'\]"):
        import_field(tmp_path / "o1", [a, b])
    mapped = import_field(tmp_path / "o2", [a, b], val_fraction=0, label_map={"lime": "green"})
    assert mapped.classes == LABELS
    union = import_field(tmp_path / "o3", [a, b], val_fraction=0, union_labels=True)
    assert union.classes == ["red", "green", "blue", "lime"]
    assert load(tmp_path / "o3").classes == ["red", "green", "blue", "lime"]


def test_bad_folders_are_named(tmp_path: Path, capsys) -> None:
    good = device(tmp_path, "good", [scene(1)])
    empty = tmp_path / "empty"
    empty.mkdir()
    cases: list[tuple[list[str], str]] = [
        ([str(tmp_path / "missing")], "missing: no such folder"),
        ([str(empty)], "empty: no field data: expected annotations/instances_default.json"),
    ]
    damaged = device(tmp_path, "damaged", [scene(2)])
    json_path = next(damaged.rglob("instances_default.json"))
    json_path.write_text("{not json")
    cases.append(([str(damaged)], "instances_default.json: not readable as JSON"))
    lost = device(tmp_path, "lost", [scene(3)])
    next(lost.rglob("*.jpg")).unlink()
    cases.append(([str(lost)], "image id 1: .* is missing"))
    for i, (folders, message) in enumerate(cases):
        assert main(["import-field", str(tmp_path / f"out{i}"), str(good), *folders]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and re.search(message, err), err
    assert main(["import-field", str(good / "o"), str(good)]) == 2
    assert "must not be inside the input" in capsys.readouterr().err
    assert main(["import-field", str(tmp_path / "x"), str(good), "--max-distance", "257"]) == 2
    assert "--max-distance: expected an integer from 0 to 256" in capsys.readouterr().err
    assert main(["import-field", str(tmp_path / "x"), str(good), "--map", "red"]) == 2
    assert "--map: expected OLD=NEW" in capsys.readouterr().err


def classifier_device(root: Path, name: str, verdicts: list[tuple[list[float], bool]]) -> Path:
    """A device whose classifier kept one frame per ``(scores, multilabel)``."""
    options = CollectOptions(score_band=(0.0, 1.0), sample_rate=0, min_interval_s=0)
    state = root / name / "sources" / "cam"
    stage = CollectStage(options, StageContext("cam", StatsRegistry(), tuple(LABELS), state,
                                               None, name))  # fmt: skip
    for seq, (scores, multilabel) in enumerate(verdicts):
        cls = Classifications(np.array(scores, np.float32), multilabel)
        result = Result("cam", seq, T0 + seq, "clf@1", "classify", LABELS, (W, H), cls,
                        class_thresholds=np.full(3, 0.5, np.float32))  # fmt: skip
        stage.process(result, Frame(scene(100 + seq + 10 * len(name)), "cam", seq, T0 + seq))
    return root / name


def test_classifier_frames_become_class_folders_or_multilabel(tmp_path: Path) -> None:
    # sure of green; unsure (0.45 < 0.5): its top guess, blue, for a labeller to correct
    single = classifier_device(tmp_path, "one", [([0.1, 0.8, 0.1], False),
                                                  ([0.2, 0.35, 0.45], False)])  # fmt: skip
    done = import_field(tmp_path / "folders", [single], val_fraction=0)
    assert done.fmt == "folders"
    dataset = load(tmp_path / "folders", "folders")
    assert sorted(s.labels[0] for s in dataset.samples) == ["blue", "green"]
    multi = classifier_device(tmp_path, "many", [([0.9, 0.7, 0.1], True),
                                                  ([0.1, 0.2, 0.6], True)])  # fmt: skip
    done = import_field(tmp_path / "csv", [multi], val_fraction=0)
    assert done.fmt == "multilabel"
    dataset = load(tmp_path / "csv", "multilabel")
    assert dataset.multilabel
    assert sorted(tuple(sorted(s.labels)) for s in dataset.samples) == [
        ("blue",), ("green", "red")
    ]  # fmt: skip
    with pytest.raises(DatasetError, match="mix detector and classifier frames"):
        import_field(tmp_path / "mixed", [single, device(tmp_path, "det", [scene(1)])])
