"""``edge-agent run``: run the agent with a config file until its sources end or a signal."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.bundle import BundleError
from edge_agent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    LOG_FORMAT,
    print_config_error,
    stop_on_signals,
)
from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.runtimes import ModelRuntimeError

if TYPE_CHECKING:
    from edge_agent.pipeline.agent import ResultHook

log = logging.getLogger("edge_agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent run",
        description="Run the agent: read the sources, run the model, publish results over MQTT. "
        "Stops when every finite source ends, or on SIGINT/SIGTERM.",
    )
    parser.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")
    return parser


def run_agent(cfg: AgentConfig, on_result: ResultHook | None = None) -> int:
    """Run until every finite source ends or SIGINT/SIGTERM arrives."""
    from edge_agent.pipeline import Agent
    from edge_agent.sources import SourceError

    agent = Agent(cfg, on_result=on_result)
    with stop_on_signals(agent.stop):
        try:
            with agent:
                agent.wait()
        except (BundleError, ModelRuntimeError, SourceError) as exc:
            log.error("%s", exc)
            return EXIT_BAD_INPUT
    return EXIT_FAILED if agent.frames_failed() and not agent.frames_done() else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=cfg.log_level, format=LOG_FORMAT)
    return run_agent(cfg)
