"""edge-trainer through main([...]): return codes, output, and no traceback for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import build_parser, main
from trainer.datasets import load


@pytest.fixture(scope="module")
def shelf_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "shelf"
    argv = ["synth", "--kind", "shelf", "--n", "10", "--format", "yolo", "--size", "160x160"]
    assert main([*argv, "--seed", "1", str(out)]) == 0
    return out


def test_synth_prints_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--kind", "trail", "--n", "5", "--format", "voc", "--size", "160x120"]
    assert main([*argv, str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "rendered 5 trail scenes" in out and "as voc" in out
    assert len(list((tmp_path / "t" / "JPEGImages").iterdir())) == 5


@pytest.mark.parametrize("dst", ["coco", "voc", "yolo"])
def test_convert_detection(shelf_yolo: Path, tmp_path: Path, dst: str, capsys) -> None:
    argv = ["convert", "--from", "yolo", "--to", dst, str(shelf_yolo), str(tmp_path / dst)]
    assert main(argv) == 0
    assert f"from yolo to {dst}" in capsys.readouterr().out
    before, after = load(shelf_yolo), load(tmp_path / dst)
    assert len(after.samples) == len(before.samples) == 10
    assert sum(len(s.boxes) for s in after.samples) == sum(len(s.boxes) for s in before.samples)


def test_convert_detects_input_format_and_resplits(shelf_yolo: Path, tmp_path: Path) -> None:
    argv = ["convert", "--to", "coco", "--val-fraction", "0.5", "--seed", "3"]
    assert main([*argv, str(shelf_yolo), str(tmp_path / "c")]) == 0
    names = sorted(p.name for p in (tmp_path / "c" / "annotations").iterdir())
    assert names == ["instances_train.json", "instances_val.json"]
    val = json.loads((tmp_path / "c" / "annotations" / "instances_val.json").read_text())
    assert 3 <= len(val["images"]) <= 6


def test_convert_classification(tmp_path: Path) -> None:
    argv = ["synth", "--kind", "shelf", "--n", "3", "--format", "folders", "--size", "160x160"]
    assert main([*argv, str(tmp_path / "f")]) == 0
    assert main(["convert", "--to", "multilabel", str(tmp_path / "f"), str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "train.csv").read_text().startswith("path,labels\n")
    assert main(["convert", "--to", "folders", str(tmp_path / "m"), str(tmp_path / "f2")]) == 0


@pytest.mark.parametrize(("src", "dst"), [("yolo", "folders"), ("multilabel", "coco")])
def test_impossible_pairs_are_refused_clearly(tmp_path: Path, src: str, dst: str, capsys) -> None:
    argv = ["convert", "--from", src, "--to", dst, str(tmp_path), str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot convert") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_convert_of_broken_dataset_names_the_file(shelf_yolo: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    assert main(["convert", "--to", "yolo", str(shelf_yolo), str(broken)]) == 0
    label = sorted((broken / "labels" / "train").iterdir())[0]
    label.write_text("0 0.5 0.5 0.1\n")
    capsys.readouterr()
    assert main(["convert", "--to", "coco", str(broken), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"labels/train/{label.name} line 1" in err
    assert "Traceback" not in err


def test_inspect_reports_counts_and_low_data_warning(shelf_yolo: Path, capsys) -> None:
    assert main(["inspect", str(shelf_yolo)]) == 0
    out = capsys.readouterr().out
    assert "(yolo), detect, 4 classes" in out
    assert "images:  10 (train 8, val 2)" in out
    assert "width:   min 160 / median 160 / max 160 px" in out
    for name in ("can", "bottle", "box", "bag"):
        assert any(line.startswith(name) for line in out.splitlines())
    assert "WARNING: class" in out and "below the usual minimum of 50" in out


def test_inspect_classification_warns_below_30_images(tmp_path: Path, capsys) -> None:
    argv = ["synth", "--kind", "trail", "--n", "4", "--format", "folders", "--size", "160x160"]
    assert main([*argv, "--val-fraction", "0", str(tmp_path / "f")]) == 0
    assert main(["inspect", "--format", "folders", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "classify" in out and "below the usual minimum of 30" in out


def test_inspect_without_warnings(tmp_path: Path, capsys) -> None:
    argv = ["synth", "--kind", "shelf", "--n", "20", "--format", "coco", "--size", "160x160"]
    assert main([*argv, str(tmp_path / "big")]) == 0
    assert main(["inspect", str(tmp_path / "big")]) == 0
    out = capsys.readouterr().out
    assert "no warnings" in out and "WARNING" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "in", "out"],  # --to missing
        ["synth", "--kind", "shelf", "--n", "2", "--format", "coco", "--size", "big", "o"],
        ["synth", "--kind", "zoo", "--n", "2", "--format", "coco", "o"],
        ["train"],
    ],
)
def test_bad_usage_returns_2(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_missing_input_and_busy_output(shelf_yolo: Path, tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "error: " in capsys.readouterr().err
    argv = ["synth", "--kind", "shelf", "--n", "2", "--format", "coco", str(shelf_yolo)]
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_help_and_only_honest_subcommands(capsys) -> None:
    assert main(["--help"]) == 0
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {
        "convert",
        "inspect",
        "synth",
        "train",
        "evaluate",
        "export",
        "keygen",
        "sign",
        "pack",
        "push",
        "fleet",
        "import-field",
    }


def test_trainer_imports_without_torch() -> None:
    code = (
        "import sys, trainer.cli, trainer.datasets, trainer.synth; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_convert_refuses_output_inside_input(shelf_yolo: Path, capsys) -> None:
    assert main(["convert", "--to", "coco", str(shelf_yolo), str(shelf_yolo / "out")]) == 2
    assert "must not be inside the input" in capsys.readouterr().err
    assert not (shelf_yolo / "out").exists()


# Two error channels: the user's mistakes exit 2 with one line; a bug keeps its traceback.


def test_a_bug_is_not_reported_as_bad_input(
    shelf_yolo: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import trainer.cli

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal mix-up")  # a bug, not an InputError

    monkeypatch.setattr(trainer.cli, "load", broken)
    with pytest.raises(ValueError, match="internal mix-up"):
        main(["inspect", str(shelf_yolo)])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback(shelf_yolo: Path) -> None:
    code = (
        "import sys, trainer.cli\n"
        "def broken(*a, **k): raise ValueError('internal mix-up')\n"
        "trainer.cli.describe = broken\n"
        "sys.exit(trainer.cli.main(sys.argv[1:]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code, "inspect", str(shelf_yolo)],
        capture_output=True, text=True, cwd=root,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValueError: internal mix-up" in done.stderr


def test_a_bug_in_a_signing_command_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.signing_cli

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal mix-up")

    monkeypatch.setattr(trainer.signing_cli, "generate_keypair", broken)
    with pytest.raises(ValueError, match="internal mix-up"):
        main(["keygen", "--out", str(tmp_path / "keys")])


def test_a_missing_dataset_folder_is_the_users_mistake(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-data"
    argv = ["train", "--task", "detect", "--model", "ssdlite320_mobilenet_v3_large"]
    assert main([*argv, "--data", str(missing), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {missing}: no such dataset file or folder\n"


def test_a_bad_model_name_is_the_users_mistake(shelf_yolo: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    argv = ["train", "--task", "detect", "--model", "resnet9000", "--data", str(shelf_yolo)]
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'resnet9000': expected one of [")
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--workers", "-1"), ("--patience", "-2"), ("--freeze-epochs", "-1"), ("--lr", "-0.1")],
)
def test_negative_training_numbers_are_usage_errors(
    shelf_yolo: Path, tmp_path: Path, flag: str, value: str, capsys
) -> None:
    argv = ["train", "--task", "detect", "--model", "x", "--data", str(shelf_yolo)]
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "r"), flag, value]) == 2
    assert f"argument {flag}: expected" in capsys.readouterr().err


def test_trainer_exit_codes_are_the_agents() -> None:
    from edge_agent.cli import common
    from trainer import cli, commands, export_cli, signing_cli

    for module in (cli, commands, export_cli, signing_cli):
        for name in ("EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT"):
            if hasattr(module, name):
                assert getattr(module, name) is getattr(common, name)
        assert not hasattr(module, "EXIT_USAGE") and not hasattr(module, "EXIT_ERROR")
    assert export_cli.EXIT_OVER_BUDGET is common.EXIT_OVER_BUDGET
    assert not hasattr(export_cli, "EXIT_PARITY") and not hasattr(export_cli, "EXIT_BUDGET")
