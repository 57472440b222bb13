"""``edge-agent demo``: count products on a generated shelf clip, offline (edge_agent/demo/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.cli.common import int_in
from edge_agent.logsetup import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent demo",
        description="Count products on a generated shelf clip with a bundled model and publish "
        "the counts over MQTT; no camera, download or broker needed.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="work folder")
    parser.add_argument(
        "--mqtt-host",
        default="localhost",
        help="broker to publish to; when none answers, an embedded one starts on 127.0.0.1",
    )
    parser.add_argument("--mqtt-port", type=int_in(1, 65535), default=1883, help="broker port")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="play the clip as fast as the model goes, not at its frame rate",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edge_agent.demo import run_demo

    configure_logging("WARNING")
    realtime = False if args.fast else None  # None: the demo module default (real time)
    return run_demo(args.out, args.mqtt_host, args.mqtt_port, realtime=realtime)
