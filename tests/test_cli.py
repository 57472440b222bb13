"""edge-agent's dispatcher: lists the commands, hands each its own arguments, stays light."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import __version__
from edge_agent.cli import main
from edge_agent.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def exit_code(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_unknown_command_lists_the_valid_ones(capsys):
    assert exit_code(["nope"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err
    for name in COMMANDS:
        assert f"'{name}'" in err


def test_no_command_lists_the_valid_ones(capsys):
    assert exit_code([]) == 2
    assert f"expected a command, one of: {', '.join(COMMANDS)}" in capsys.readouterr().err


def test_help_lists_every_command_with_its_one_line_help(capsys):
    assert exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, help_) in COMMANDS.items():
        assert f"  {name} " in out and help_ in out


def test_version(capsys):
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"edge-agent {__version__}"


def test_command_help_shows_that_commands_own_options(capsys):
    assert exit_code(["check-config", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: edge-agent check-config [-h] file")
    assert "YAML config file" in out and "--mqtt-host" not in out and "--config" not in out
    assert exit_code(["serve", "-h"]) == 0
    assert "--max-body-bytes" in capsys.readouterr().out


def test_command_arguments_are_checked_by_the_command(capsys):
    assert exit_code(["serve", "b", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: edge-agent serve")
    assert "argument --port: expected an integer from 0 to 65535, got 70000" in err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_is_a_module_with_build_parser_and_main(name):
    module = importlib.import_module(f"edge_agent.cli.{COMMANDS[name][0]}")
    assert module.build_parser().prog == f"edge-agent {name}"
    assert callable(module.main)


LIGHT = """
import sys
from edge_agent.cli import main
try:
    main([*sys.argv[1:]])
except SystemExit:
    pass
heavy = ("cv2", "onnxruntime", "paho", "edge_agent.pipeline", "edge_agent.config")
print(",".join(sorted(m for m in sys.modules if m.startswith(heavy))))
"""


def test_version_and_help_import_no_command():
    for argv in (["--version"], ["--help"]):
        out = subprocess.run(
            [sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True, cwd=ROOT
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "", f"{argv} imported {out.stdout}"


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert (out.returncode, out.stdout.strip()) == (0, f"edge-agent {__version__}"), out.stderr


def test_serve_score_threshold_must_be_a_fraction(capsys):
    for value in ("5", "-1", "nan", "x"):
        with pytest.raises(SystemExit) as info:
            main(["serve", "bundle", "--score-threshold", value])
        assert info.value.code == 2
        assert "--score-threshold: expected a number from 0 to 1" in capsys.readouterr().err


def test_inspect_model_manifest_into_a_missing_folder_is_exit_2(tmp_path, capsys):
    from tools.toy_models import mean_colour_classifier

    model = mean_colour_classifier(tmp_path / "m.onnx")
    out = tmp_path / "nothere" / "manifest.json"
    assert main(["inspect-model", str(model), "--manifest", str(out)]) == 2
    assert f"--manifest {out}: no such folder" in capsys.readouterr().err
