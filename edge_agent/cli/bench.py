"""``edge-agent bench``: measure runtimes and thread counts for bundles on this machine, and
optionally write the fastest into an agent config (edge_agent/bench/ does the measuring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, int_in
from edge_agent.logsetup import configure_logging

if TYPE_CHECKING:
    from edge_agent.bench import Row


def _thread_counts(text: str) -> list[int]:
    return [int_in(1, 64)(part) for part in text.split(",")]


def _source_counts(text: str) -> list[int]:
    return [] if text == "none" else [int_in(1, 64)(part) for part in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent bench",
        description="Measure each bundle with each runtime thread count here: the bare runtime, "
        "decode + NMS, the whole agent path, and plain OpenCV DNN; recommend the fastest.",
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        action="append",
        required=True,
        help="bundle to measure (repeat for FP32/INT8/TFLite variants)",
    )
    parser.add_argument(
        "--source", help="video file or stream for the agent path (default: a generated clip)"
    )
    parser.add_argument(
        "--threads",
        type=_thread_counts,
        help="thread counts, e.g. 1,2 (default: 1 and all cores)",
    )
    parser.add_argument(
        "--frames", type=int_in(2), default=100, help="frames timed per row and round"
    )
    parser.add_argument(
        "--rounds", type=int_in(1), default=3, help="interleaved rounds pooled into each row"
    )
    parser.add_argument("--mqtt-host", default="127.0.0.1", help="broker for the agent path")
    parser.add_argument("--mqtt-port", type=int_in(1, 65535), default=1883, help="broker port")
    parser.add_argument(
        "--sources",
        type=_source_counts,
        default=[1, 2, 4],
        help="live sources sharing one model for the multi-source rows, e.g. 1,2,4 "
        "(default), or none",
    )
    parser.add_argument(
        "--sources-seconds",
        type=int_in(1, 600),
        default=3,
        help="how long each multi-source row runs, s",
    )
    parser.add_argument(
        "--apply",
        type=Path,
        metavar="CONFIG",
        help="write the fastest variant into this agent config",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edge_agent.bench import apply_to_config, format_table, recommend, run_bench
    from edge_agent.bundle import BundleError
    from edge_agent.config import ConfigError, MqttConfig
    from edge_agent.runtimes import ModelRuntimeError
    from edge_agent.sources import SourceError

    configure_logging("WARNING")
    mqtt = MqttConfig(host=args.mqtt_host, port=args.mqtt_port, client_id="edgesight-bench")
    try:
        rows = run_bench(args.bundle, args.source, mqtt, args.threads, args.frames, args.rounds)
    except (BundleError, ModelRuntimeError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(rows))
    if args.sources:
        print()
        print(_sources_table(rows, args.sources, args.sources_seconds, args.source))
    best = recommend(rows)
    if best is None:
        return EXIT_FAILED
    print(
        f"\nfastest here: {best.variant} ({best.fps:.1f} fps through the whole agent), "
        f"bundle {best.bundle}"
    )
    if args.apply:
        try:
            apply_to_config(args.apply, best)
        except (OSError, ConfigError) as exc:
            print(f"error: cannot update {args.apply}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"wrote runtime {best.runtime}, threads {best.threads} into {args.apply}")
    return EXIT_OK


def _sources_table(rows: list[Row], counts: list[int], seconds: int, source: str | None) -> str:
    """Several simulated live sources on each measured variant, against its bare loop."""
    from edge_agent.bench import first_frame, format_sources_table, sources_row
    from edge_agent.bundle import load_bundle

    image = first_frame(source)
    bundles = {row.bundle: load_bundle(row.bundle) for row in rows if row.path == "runtime"}
    out = []
    for row in rows:
        if row.path != "runtime":
            continue
        bundle = bundles[row.bundle]  # loaded and hashed once, whatever the thread counts
        for n in counts:
            out.append(sources_row(bundle, row.runtime, row.threads, n, row.fps, image, seconds))
    return format_sources_table(out)
