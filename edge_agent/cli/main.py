"""``edge-agent``: run | demo | check-config. ``build_parser()`` plus ``main(argv) -> int``.

Exit codes: 0 done, 1 failed while running, 2 the input (config, bundle, source) is wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import __version__
from edge_agent.bundle import BundleError, load_bundle
from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, stop_on_signals
from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.runtimes import ModelRuntimeError

if TYPE_CHECKING:
    from edge_agent.pipeline.agent import ResultHook

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

log = logging.getLogger("edge_agent")


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
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


def _thread_counts(text: str) -> list[int]:
    return [_int_in(1, 64)(part) for part in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Run vision model bundles on camera frames and publish results over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent with a config file")
    run.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")

    check = sub.add_parser("check-config", help="validate a config file and its bundle")
    check.add_argument("file", type=Path, help="YAML config file")

    inspect = sub.add_parser("inspect-model", help="print a model's inputs and outputs")
    inspect.add_argument("file", type=Path, help=".onnx or .tflite model file")
    inspect.add_argument(
        "--manifest", type=Path, help="also write a manifest skeleton to complete to this file"
    )

    srv = sub.add_parser("serve", help="answer Custom Vision-style prediction requests over HTTP")
    srv.add_argument("bundle", type=Path, help="model bundle folder")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    srv.add_argument("--port", type=_int_in(0, 65535), default=8080, help="TCP port")
    srv.add_argument(
        "--runtime",
        choices=["onnx", "tflite"],
        help="inference runtime (default: the one for the bundle's model format)",
    )
    srv.add_argument("--threads", type=_int_in(1, 64), default=2, help="runtime threads")
    srv.add_argument("--score-threshold", type=float, help="override the bundle's threshold")
    srv.add_argument("--project", default="", help="project id echoed in answers")
    srv.add_argument("--iteration", default="", help="iteration name echoed in answers")
    srv.add_argument(
        "--max-body-bytes",
        type=_int_in(1),
        default=20 * 1024 * 1024,
        help="largest image accepted, bytes",
    )
    srv.add_argument("--no-url", action="store_true", help="refuse POST /url")

    bench = sub.add_parser("bench", help="measure runtimes and threads for bundles here")
    bench.add_argument(
        "--bundle",
        type=Path,
        action="append",
        required=True,
        help="bundle to measure (repeat for FP32/INT8/TFLite variants)",
    )
    bench.add_argument(
        "--source", help="video file or stream for the agent path (default: a generated clip)"
    )
    bench.add_argument(
        "--threads",
        type=_thread_counts,
        help="thread counts, e.g. 1,2 (default: 1 and all cores)",
    )
    bench.add_argument(
        "--frames", type=_int_in(2), default=100, help="frames timed per row and round"
    )
    bench.add_argument(
        "--rounds", type=_int_in(1), default=3, help="interleaved rounds pooled into each row"
    )
    bench.add_argument("--mqtt-host", default="127.0.0.1", help="broker for the agent path")
    bench.add_argument("--mqtt-port", type=_int_in(1, 65535), default=1883, help="broker port")
    bench.add_argument(
        "--apply",
        type=Path,
        metavar="CONFIG",
        help="write the fastest variant into this agent config",
    )

    demo = sub.add_parser(
        "demo", help="count products on a generated shelf clip (offline, no broker needed)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="work folder")
    demo.add_argument(
        "--mqtt-host",
        default="localhost",
        help="broker to publish to; when none answers, an embedded one starts on 127.0.0.1",
    )
    demo.add_argument("--mqtt-port", type=int, default=1883, help="broker port")
    demo.add_argument(
        "--fast",
        action="store_true",
        help="play the clip as fast as the model goes, not at its frame rate",
    )
    return parser


def _print_config_error(exc: ConfigError) -> None:
    print(f"{exc.file}: {len(exc.issues)} problem(s):", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)


def _inspect(file: Path, manifest: Path | None) -> int:
    from edge_agent.runtimes.inspect import inspect_model

    if not file.is_file():
        print(f"error: {file}: no such model file", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print(inspect_model(file, manifest))
    except (ValueError, RuntimeError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from edge_agent.bench import apply_to_config, format_table, recommend, run_bench
    from edge_agent.config import MqttConfig
    from edge_agent.sources import SourceError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    mqtt = MqttConfig(host=args.mqtt_host, port=args.mqtt_port, client_id="edgesight-bench")
    try:
        rows = run_bench(args.bundle, args.source, mqtt, args.threads, args.frames, args.rounds)
    except (BundleError, ModelRuntimeError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(rows))
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


def check_config(file: Path) -> int:
    try:
        cfg = load_config(file)
        bundle = load_bundle(cfg.model.bundle, cfg.model.public_keys)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_BAD_INPUT
    except BundleError as exc:
        print(f"{file}: model.bundle: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    m = bundle.manifest
    signed = f", signed by {bundle.signed_by}" if bundle.signed_by else ""
    print(f"{file}: OK")
    print(f"  device   {cfg.device_id}")
    print(
        f"  model    {bundle.model_id} ({m.task}, {len(m.labels)} labels, {m.model.file}, "
        f"runtime {cfg.model.runtime_for(m.model.format)}, {cfg.model.threads} threads{signed})"
    )
    for s in cfg.sources:
        limit = f", at most {s.fps_limit:g} fps" if s.fps_limit else ""
        print(f"  source   {s.id}: {s.uri} ({s.kind}{limit}, on end: {s.on_eof})")
    mq = cfg.mqtt
    auth = "with login" if mq.username else "anonymous"
    tls = "TLS" if mq.tls else "plain TCP"
    print(
        f"  mqtt     {mq.host}:{mq.port} ({tls}, {auth}), topics {mq.topic_prefix}/"
        f"{cfg.device_id}/..."
    )
    return EXIT_OK


def run_agent(cfg: AgentConfig, on_result: ResultHook | None = None) -> int:
    """Run until every finite source ends or SIGINT/SIGTERM arrives."""
    from edge_agent.pipeline import Agent
    from edge_agent.sources import SourceError

    agent = Agent(cfg, on_result=on_result)
    with stop_on_signals(agent.stop):
        try:
            agent.start()
            agent.wait()
        except (BundleError, ModelRuntimeError, SourceError) as exc:
            log.error("%s", exc)
            return EXIT_BAD_INPUT
        finally:
            agent.close()
    return EXIT_FAILED if agent.frames_failed() and not agent.frames_done() else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "serve":
        from edge_agent.serve import serve

        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        return serve(
            args.bundle,
            args.host,
            args.port,
            args.runtime,
            args.threads,
            args.score_threshold,
            project=args.project,
            iteration=args.iteration,
            max_body_bytes=args.max_body_bytes,
            allow_url=not args.no_url,
        )
    if args.command == "bench":
        return _bench(args)
    if args.command == "inspect-model":
        return _inspect(args.file, args.manifest)
    if args.command == "demo":
        from edge_agent.demo import run_demo

        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
        realtime = False if args.fast else None  # None: the demo module default (real time)
        return run_demo(args.out, args.mqtt_host, args.mqtt_port, realtime=realtime)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=cfg.log_level, format=LOG_FORMAT)
    return run_agent(cfg)


if __name__ == "__main__":
    sys.exit(main())
