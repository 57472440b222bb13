"""PyTorch -> TFLite with litert-torch (no TensorFlow), FP32 or full INT8 via PT2E.

The module is converted with an NHWC input (``ExportModule(nhwc=True)``), since TFLite users
and the XNNPACK delegate expect channels last. Inputs and outputs are named by the signature
(``serving_default``: input ``images``, outputs ``logits`` or ``loc`` + ``logits``), because the
order of output tensors in a .tflite file is not guaranteed; edge_agent's TFLite runtime finds
them by those signature keys. litert-torch is heavy (jax, ai-edge-quantizer) and sits in its own
extra, so it is imported only here and only when asked for.

Importing and running litert-torch prints ~90 lines: its progress (rich, on stdout), absl and
TensorFlow-style C++ logging written straight to file descriptor 2, torch and jax warnings.
``converter_output`` sends all of it to a log file beside the bundle (``BUNDLE_DIR.convert.log``)
by redirecting fds 1 and 2 themselves, plus Python's streams and logging handlers; on a failure
it prints the log's tail and its path. With no log (``--verbose``) the output stays on stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainer.export_onnx import ExportModule

INSTALL_HINT = "TFLite export needs the export-tflite extra: pip install 'edgesight[export-tflite]'"
#: The converter's log sits beside the bundle folder, not inside it: a signed bundle may hold no
#: file its manifest does not list (edge_agent.bundle.signing.check_no_unlisted_files), and the
#: log is about this machine's conversion, not something to ship. Same pattern as --pack's
#: ``BUNDLE_DIR.tar.gz``.
CONVERT_LOG_SUFFIX = ".convert.log"
#: Lines of the log shown on the terminal when a conversion fails (its error is at the end).
FAILURE_TAIL_LINES = 30


class MissingExtraError(RuntimeError):
    """An optional package the requested export needs is not installed."""


def convert_log_path(bundle_dir: Path) -> Path:
    """Where the converter's output goes: ``BUNDLE_DIR.convert.log``, beside the bundle."""
    bundle_dir = Path(bundle_dir).resolve()
    return bundle_dir.with_name(bundle_dir.name + CONVERT_LOG_SUFFIX)


def start_convert_log(bundle_dir: Path) -> Path:
    """A fresh converter log for an export into ``bundle_dir`` (an earlier one is replaced)."""
    log = convert_log_path(bundle_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    log.write_text(f"# litert-torch output for {bundle_dir}, {when}\n", encoding="utf-8")
    return log


def _console_handlers() -> list[logging.StreamHandler[IO[str]]]:
    """Logging handlers that write to the console streams (torch's, absl's, the CLI's)."""
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and id(h.stream) in consoles
    ]


def _flush_c_stdio() -> None:
    """C code's printf output waits in libc's buffer (fully buffered on a file): flush it into
    the log before the terminal's descriptors come back."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


def _print_tail(log: Path) -> None:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-FAILURE_TAIL_LINES:]
    print(f"litert-torch failed; the last {len(lines)} lines of {log}:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


@contextlib.contextmanager
def converter_output(log: Path | None) -> Iterator[None]:
    """Send everything litert-torch prints to ``log`` (appended), at the file-descriptor level:
    C++ libraries write to fd 2 directly, past Python's ``sys.stderr``. On an exception the
    log's tail and path go to the terminal. ``log=None`` (``--verbose``): output stays on the
    terminal, on stderr, since the CLI keeps stdout for its results."""
    if log is None:
        with contextlib.redirect_stdout(sys.stderr):  # litert-torch's progress is on stdout
            yield
        return
    sink = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    # Python-level output goes to fds 1 and 2 as well, through streams that are never closed
    # (closefd=False): a handler or console created during the conversion may keep one, and
    # writing to it later must reach the terminal, not fail on a closed file.
    fd_out, fd_err = (
        open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        for fd in (1, 2)
    )
    handlers = [(h, h.stream) for h in _console_handlers()]
    failed = False
    try:
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        for handler, _ in handlers:
            handler.setStream(fd_err)
        with contextlib.redirect_stdout(fd_out), contextlib.redirect_stderr(fd_err):
            yield
    except ImportError:  # a missing extra: require_litert says which, the log adds nothing
        raise
    except Exception:
        failed = True
        raise
    finally:
        fd_out.flush()
        fd_err.flush()
        _flush_c_stdio()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, sink):
            os.close(fd)
        for handler, stream in handlers:
            handler.setStream(stream)
        if failed:
            _print_tail(log)


def require_litert(log: Path | None = None) -> ModuleType:
    """Import litert_torch (its import alone logs a few lines: into ``log`` when given), or say
    which extra installs it."""
    try:
        with converter_output(log):
            import litert_torch
    except ImportError as exc:
        raise MissingExtraError(f"{INSTALL_HINT} (import failed: {exc})") from exc
    return litert_torch


def export_tflite(
    module: ExportModule,
    path: Path,
    size: int,
    calibration: Sequence[np.ndarray] | None = None,
    log: Path | None = None,
) -> Path:
    """Write ``module`` as a .tflite to ``path``; INT8 (PT2E) when ``calibration`` is given.

    The INT8 file has int8 input and outputs (quantized with the tensors' own scale and zero
    point, which edge_agent's runtime applies), so the bundle's float pre-processing stays.
    The converter's output is appended to ``log`` (see converter_output); None: stderr.
    """
    if not module.nhwc:
        raise ValueError("TFLite bundles take NHWC input: build the ExportModule with nhwc=True")
    from trainer.export_onnx import INPUT_NAME, sample_input  # torch: only once converting

    litert_torch = require_litert(log)
    module.eval()
    sample = sample_input(size, nhwc=True)
    if log is not None:
        kind = "FP32" if calibration is None else f"INT8, {len(calibration)} calibration images"
        with log.open("a", encoding="utf-8") as f:
            f.write(f"# converting to {path.name} ({kind})\n")
    with converter_output(log):
        if calibration is None:
            converted = litert_torch.convert(module, sample_kwargs={INPUT_NAME: sample})
        else:
            from litert_torch.quantize.quant_config import QuantConfig

            from trainer.quantize import quantize_pt2e

            quantized, quantizer = quantize_pt2e(module, sample, calibration)
            converted = litert_torch.convert(
                quantized,
                sample_kwargs={INPUT_NAME: sample},
                quant_config=QuantConfig(pt2e_quantizer=quantizer),
            )
        converted.export(str(path))
    return path
