"""``edge-agent``: one module per command, each ``build_parser()`` plus ``main(argv) -> int``."""

from edge_agent.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
