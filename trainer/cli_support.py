"""What every edge-trainer subcommand shares: argument types, which errors are the user's, the
error line, and showing the trainer's progress messages on stderr while a command runs.

Two error channels: an exception in INPUT_ERRORS is something the user must fix (a flag, a
file, a dataset, a full disk) and becomes ``error: <message>`` and exit 2; anything else is a
bug in this code and propagates with its traceback (exit 1), so it is never mistaken for bad
input. A plain ValueError is a bug: user-facing checks raise trainer.errors.InputError.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from edge_agent.bundle import BundleError
from edge_agent.bundle.archive import ArchiveError
from edge_agent.bundle.signing import KeyFormatError, SignatureError
from edge_agent.cli.common import EXIT_BAD_INPUT, int_in
from edge_agent.config import ConfigError
from trainer.errors import InputError

#: The trainer's own input errors (InputError covers DatasetError, ExportError, RunConfigError).
#: OSError is here because a missing file, a permission or a full disk is the environment's,
#: not a bug, and its message names the path.
INPUT_ERRORS: tuple[type[Exception], ...] = (InputError, OSError)
#: edge_agent's input errors: a bundle, key, signature, archive or agent config the user gave.
#: Only commands that read such a thing from the user catch these; a BundleError on a bundle
#: the trainer just wrote itself is a bug.
AGENT_INPUT_ERRORS: tuple[type[Exception], ...] = (
    BundleError,
    ArchiveError,
    ConfigError,
    KeyFormatError,
    SignatureError,
)


#: argparse types for counts, the agent's own (they name the flag in their error).
positive = int_in(1)
non_negative = int_in(0)


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value


def split_fraction(text: str) -> float:
    """A --val-fraction: [0, 1), 0 meaning no split."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def error(message: object) -> int:
    """Print the one-line ``error: ...`` for bad input; return the bad-input exit code."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


@contextmanager
def console_log() -> Iterator[None]:
    """Show the trainer's INFO messages on stderr while the command runs."""
    logger = logging.getLogger("trainer")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    previous = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # libraries (onnxruntime's quantizer) add root handlers of their own
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]
