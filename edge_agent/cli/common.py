"""What the command modules share: exit codes, the log format, argparse types, error printing
and signal handling for the long-running commands (run, serve).

Kept light (no config, runtime or pipeline imports): ``edge-agent --version`` and the demo
import it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from edge_agent.cli.signals import relayed_signals

if TYPE_CHECKING:
    from edge_agent.config import ConfigError

log = logging.getLogger(__name__)

#: 0 done, 1 failed while running, 2 the input (arguments, config, bundle, source) is wrong;
#: 2 is also what argparse exits with on a bad argument.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
#: ``edge-trainer export``: the INT8 model lost more accuracy than its budget allows (rerun
#: with --allow-drop to accept it). The one code of every command's that is not above.
EXIT_OVER_BUDGET = 3


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; argparse names the flag in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            within = f">= {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected an integer {within}, got {value}")
        return value

    return parse


def print_config_error(exc: ConfigError) -> None:
    """Every problem of a config file, one a line, on stderr."""
    print(f"{exc.file}: {len(exc.issues)} problem(s):", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)


def stop_on_signals(stop: Callable[[], None]) -> AbstractContextManager[None]:
    """Call ``stop`` on SIGINT or SIGTERM inside the block (from a relay thread, see
    edge_agent/cli/signals.py); the old handlers come back after."""

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, stopping", sig.name)
        stop()

    return relayed_signals({signal.SIGINT: on_signal, signal.SIGTERM: on_signal})
