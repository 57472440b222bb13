"""converter_output: what litert-torch prints goes to a log file, fd-level writes included, and
a failure shows the log's tail. A fake converter stands in (the real one: tests/test_export.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.export_tflite import (
    FAILURE_TAIL_LINES,
    convert_log_path,
    converter_output,
    start_convert_log,
)


def fake_converter(logger: logging.Logger, lines: int = 1) -> None:
    """Every way litert-torch, jax, absl and TensorFlow's C++ code print."""
    os.write(2, b"I0000 flatbuffer_export.cc] C++ logging on fd 2\n")
    os.write(1, b"C code on fd 1\n")
    print("(00:00) [START] LiteRT-Torch Convert")  # rich progress, on sys.stdout
    print("jax: a warning on sys.stderr", file=sys.stderr)
    logger.warning("absl: a handler made before the conversion")
    for i in range(lines):
        print(f"step {i}")


@contextlib.contextmanager
def console_logger() -> Iterator[logging.Logger]:
    """A logger with a console handler made before the conversion, as torch's and absl's are.
    Made in the test itself: pytest swaps sys.stderr between a fixture's setup and the test."""
    logger = logging.getLogger("tests.fake_converter")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


def test_the_log_gets_everything_and_the_terminal_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = start_convert_log(tmp_path / "export-tflite")
    assert log == tmp_path / "export-tflite.convert.log"  # beside the bundle, not inside it
    with console_logger() as logger:
        handler = logger.handlers[0]
        before = handler.stream
        with converter_output(log):
            fake_converter(logger)
        out, err = capfd.readouterr()
        assert (out, err) == ("", "")
        text = log.read_text()
        for line in ("C++ logging on fd 2", "C code on fd 1", "LiteRT-Torch Convert",
                     "jax: a warning", "absl: a handler made before"):  # fmt: skip
            assert line in text, line
        assert handler.stream is before  # the terminal is back, for the handler too
        logger.warning("after")
    print("after, stdout")
    os.write(2, b"after, fd 2\n")
    out, err = capfd.readouterr()
    assert out == "after, stdout\n" and err == "after\nafter, fd 2\n"
    assert "after" not in log.read_text()


def test_a_failure_prints_the_logs_tail_and_path(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = start_convert_log(tmp_path / "b")
    with console_logger() as logger, pytest.raises(RuntimeError, match="lowering failed"):
        with converter_output(log):
            fake_converter(logger, lines=100)
            raise RuntimeError("lowering failed")
    out, err = capfd.readouterr()
    assert out == ""
    assert f"the last {FAILURE_TAIL_LINES} lines of {log}" in err
    assert "step 99" in err and "step 0\n" not in err


def test_verbose_leaves_it_on_stderr_and_stdout_free(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with console_logger() as logger, converter_output(None):
        fake_converter(logger)
    out, err = capfd.readouterr()
    assert "LiteRT-Torch Convert" in err and "absl:" in err and "jax:" in err
    assert "C++ logging on fd 2" in err
    assert "LiteRT-Torch" not in out  # the CLI's results keep stdout to themselves
    assert not list(tmp_path.iterdir())


def test_convert_log_path_is_beside_the_bundle(tmp_path: Path) -> None:
    assert convert_log_path(tmp_path / "runs" / "shelf" / "export-tflite-int8") == (
        tmp_path / "runs" / "shelf" / "export-tflite-int8.convert.log"
    )
