"""``edge-agent COMMAND ...``: list the commands, and hand each to its own module.

Every command is a module here with ``build_parser()`` plus ``main(argv) -> int``; this one
imports it only when it runs, so ``edge-agent --version`` never loads the runtimes, OpenCV or
the pipeline (``check-config`` and ``check-bundle`` load the runtime to run the model once).
Exit codes are cli/common.py's: 0 done, 1 failed while running, 2 the input (arguments,
config, bundle, source) is wrong.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from edge_agent import __version__

#: command -> (module in edge_agent.cli, one-line help), in the order ``--help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the agent with a config file"),
    "check-config": ("check_config", "validate a config file and its bundle"),
    "check-bundle": ("check_bundle", "prove a bundle's model against its manifest"),
    "inspect-model": ("inspect_model", "print a model's inputs and outputs"),
    "serve": ("serve", "answer Custom Vision-style prediction requests over HTTP"),
    "bench": ("bench", "measure runtimes and threads for bundles here"),
    "doctor": ("doctor", "check camera, model, broker, disk, clock and heat on this device"),
    "demo": ("demo", "count products on a generated shelf clip (offline, no broker needed)"),
}


def _command_list() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = [f"  {name:<{width}}{help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(["commands:", *lines])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        usage="%(prog)s [-h] [--version] COMMAND [ARGS ...]",
        description="Run vision model bundles on camera frames and publish results over MQTT.",
        epilog=f"{_command_list()}\n\nRun 'edge-agent COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "command", nargs="?", choices=COMMANDS, metavar="COMMAND", help="one of the commands below"
    )
    # Everything after the command, --help included, is that command's to parse.
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def command_main(command: str) -> Callable[[list[str] | None], int]:
    """The ``main`` of a command's module, imported now."""
    module = importlib.import_module(f"edge_agent.cli.{COMMANDS[command][0]}")
    run: Callable[[list[str] | None], int] = module.main
    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"expected a command, one of: {', '.join(COMMANDS)}")
    return command_main(args.command)(args.args)


if __name__ == "__main__":
    sys.exit(main())
