"""The run folder's config.json as a typed model: older files load, and a bad key is named with
its file, whether train --resume, evaluate or export reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer.run_config import CONFIG_FILE, RunConfig, RunConfigError


def saved_config(**changes: Any) -> dict[str, Any]:
    """config.json as the trainer before the typed model wrote it (keys unchanged since)."""
    config = {
        "schema": "edgesight.run/1", "task": "detect",
        "model": "ssdlite320_mobilenet_v3_large", "labels": ["can", "box"], "multilabel": False,
        "size": 128, "data": "/data/shelf", "batch_size": 4, "lr": 0.003, "optimizer": "AdamW",
        "weight_decay": 0.0001, "metric": "mAP50",
        "input": {"width": 128, "height": 128, "layout": "NCHW", "color": "RGB",
                  "resize": "stretch", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "scale": "1/255"},
        "background_class": 0, "trainer_version": "0.1.0", "torch": "2.5.1",
        "created": "2025-01-01T00:00:00+00:00", "preset": "light", "seed": 3, "weights": None,
        "val_fraction": 0.2, "freeze_epochs": 0, "val_source": "dataset",
        "split": {"train": 7, "val": 3}, "epochs": 1, "reduced_tail": True,
        "best_epoch": 1, "best_metric": 0.25, "epochs_run": 1,
    }  # fmt: skip
    config.update(changes)
    return config


def write_run(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return folder / CONFIG_FILE


def test_an_older_run_config_loads_and_writes_back_the_same_keys(tmp_path: Path) -> None:
    path = write_run(tmp_path, saved_config())
    config = RunConfig.read(path)
    assert config.size_px == 128 and config.input.width_px == 128 and config.split.val == 3
    # Written back with the same keys, plus those added since (null: not known for that run).
    newer = {**saved_config(), "start_weights": None}
    assert config.to_json() == newer
    config.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == newer


def test_a_run_config_before_its_first_epoch_ends_has_no_outcome_yet(tmp_path: Path) -> None:
    unfinished = saved_config()
    for key in ("val_source", "split", "epochs", "reduced_tail", "best_epoch", "best_metric",
                "epochs_run"):  # fmt: skip
        del unfinished[key]
    config = RunConfig.read(write_run(tmp_path, unfinished))
    assert config.best_metric is None and config.updated(best_metric=0.5).best_metric == 0.5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"best_metirc": 0.3}, "best_metirc: unknown key (did you mean 'best_metric'?)"),
        ({"zzz": 1}, "zzz: unknown key; expected one of ['schema', 'task'"),
        ({"size": "big"}, "size: Input should be a valid integer"),
        ({"task": "segment"}, "task: Input should be 'classify' or 'detect'"),
        ({"input": {**saved_config()["input"], "widht": 128}}, "input.widht: unknown key"),
    ],
)
def test_a_bad_key_is_named_with_its_file(tmp_path: Path, changes: dict, message: str) -> None:
    path = write_run(tmp_path, saved_config(**changes))
    with pytest.raises(RunConfigError) as caught:
        RunConfig.read(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do


def test_not_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    path.write_text("{not json")
    with pytest.raises(RunConfigError, match=rf"{path}: not valid JSON"):
        RunConfig.read(path)


def test_export_of_a_run_with_an_unknown_key_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.cli import main

    path = write_run(tmp_path / "run", saved_config(seeds=3))
    (tmp_path / "run" / "best.pt").write_bytes(b"")  # config.json is read first
    assert main(["export", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: seeds: unknown key (did you mean 'seed'?)\n"


def test_resume_of_a_run_with_an_unknown_key_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from trainer.cli import main

    path = write_run(tmp_path / "run", saved_config(learning_rate=0.1))
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: learning_rate: unknown key") and "Traceback" not in err
