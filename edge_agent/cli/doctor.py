"""``edge-agent doctor``: check the camera, model, broker, disk, clock and temperature a config
needs on this device, and say what to do about each problem (docs/doctor.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, print_config_error

if TYPE_CHECKING:
    from edge_agent.doctor import Report

#: What each status looks like in the text report.
MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, at most 600, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent doctor",
        description="Check what the agent needs on this device: the bundle verifies and its "
        "model runs, the runtime packages, every source gives a frame, the broker accepts the "
        "configured login, free disk for the outbox and snapshots, the clock, temperature and "
        "throttling. Exit 0 when nothing failed (warnings allowed), 1 when a check failed, "
        "2 when the config itself is wrong.",
    )
    parser.add_argument("-c", "--config", type=Path, required=True, help="YAML config file")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object {ok, checks} on stdout"
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=None,
        metavar="S",
        help="seconds to wait for each source's first frame and for the broker (default 10)",
    )
    return parser


def _print_text(report: Report) -> None:
    for check in report.checks:
        print(f"{MARKS[check.status]}  {check.name}: {check.found}")
        if check.advice:
            print(f"      -> {check.advice}")
    failed = sum(c.status == "fail" for c in report.checks)
    warned = sum(c.status == "warn" for c in report.checks)
    print(f"{failed} failed, {warned} warning(s), {len(report.checks)} checks")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edge_agent.config import ConfigError
    from edge_agent.doctor import DEFAULT_TIMEOUT_S, run_checks
    from edge_agent.doctor.camera import THREAD_PREFIX

    # The checks say what they find; the sources' retry warnings would only repeat it.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    try:
        report = run_checks(args.config, args.timeout or DEFAULT_TIMEOUT_S)
    except ConfigError as exc:
        if args.json:
            issues = [str(issue) for issue in exc.issues]
            found = f"{exc.file}: " + "; ".join(issues)
            check = {"name": "config", "status": "fail", "found": found, "advice": "fix the file"}
            print(json.dumps({"ok": False, "checks": [check]}))
        else:
            print_config_error(exc)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        _print_text(report)
    code = EXIT_OK if report.ok else EXIT_FAILED
    from edge_agent.capture_guard import wait_for_stuck

    reader_alive = any(
        t.name.startswith(THREAD_PREFIX) and t.is_alive() for t in threading.enumerate()
    )
    if reader_alive or wait_for_stuck(0.5):
        # A reader or capture worker still inside OpenCV (a camera stuck in its driver) must
        # not return into Python while the interpreter shuts down: Python then ends the thread
        # with pthread_exit through OpenCV's C++ frames, and the process aborts (seen: exit
        # 134, "terminate called without an active exception"). Nothing is left to clean up.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
