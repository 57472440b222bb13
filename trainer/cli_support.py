"""What every edge-trainer subcommand shares: argument types, the error line, and showing the
trainer's progress messages on stderr while a command runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USAGE = 2  # bad input: the caller's to fix


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text}")
    return value


def error(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


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
