"""``edge-agent serve``: load a bundle and answer Custom Vision-style prediction requests over
HTTP until SIGINT/SIGTERM. The server itself is edge_agent/serve/server.py."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from edge_agent.bundle import BundleError, load_bundle
from edge_agent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    LOG_FORMAT,
    int_in,
    stop_on_signals,
)
from edge_agent.predictor import Predictor
from edge_agent.runtimes import ModelRuntimeError
from edge_agent.serve.request import DEFAULT_MAX_BODY_BYTES
from edge_agent.serve.server import PredictionServer, ServeSettings

log = logging.getLogger("edge_agent.serve")  # the name docs/serve.md shows

#: How often the main thread checks that the HTTP thread is still alive, seconds.
WATCH_INTERVAL_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent serve",
        description="Answer Custom Vision-style prediction requests (POST /image, POST /url, "
        "GET /health) over HTTP with a model bundle; see docs/serve.md.",
    )
    parser.add_argument("bundle", type=Path, help="model bundle folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int_in(0, 65535), default=8080, help="TCP port")
    parser.add_argument(
        "--runtime",
        choices=["onnx", "tflite"],
        help="inference runtime (default: the one for the bundle's model format)",
    )
    parser.add_argument("--threads", type=int_in(1, 64), default=2, help="runtime threads")
    parser.add_argument("--score-threshold", type=float, help="override the bundle's threshold")
    parser.add_argument("--project", default="", help="project id echoed in answers")
    parser.add_argument("--iteration", default="", help="iteration name echoed in answers")
    parser.add_argument(
        "--max-body-bytes",
        type=int_in(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest image accepted, bytes",
    )
    parser.add_argument("--no-url", action="store_true", help="refuse POST /url")
    return parser


def serve(
    bundle_path: Path,
    host: str,
    port: int,
    runtime: str | None = None,
    threads: int = 2,
    score_threshold: float | None = None,
    settings: ServeSettings | None = None,
) -> int:
    """Load the bundle and serve until SIGINT/SIGTERM with ``settings`` (project, iteration,
    body and URL limits).

    Returns 0 after a signal, 2 if the bundle, runtime or address is wrong, 1 if the server
    thread died. Call from the main thread (signal handlers).
    """
    try:
        bundle = load_bundle(bundle_path)
        predictor = Predictor(bundle, runtime, threads, score_threshold)
    except (BundleError, ModelRuntimeError, ValueError) as exc:
        print(f"edge-agent serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        server = PredictionServer((host, port), predictor, settings or ServeSettings())
    except (OSError, ValueError, OverflowError) as exc:  # OverflowError: port beyond 65535
        predictor.close()
        print(f"edge-agent serve: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, name="serve-http", daemon=True)
    m = bundle.manifest
    with stop_on_signals(stop.set):
        thread.start()
        log.info(
            "serving %s (%s, %d labels) on %s: POST /image, POST /url, GET /health",
            bundle.model_id,
            m.task,
            len(m.labels),
            server.url,
        )
        try:
            while not stop.wait(WATCH_INTERVAL_S):
                if not thread.is_alive():
                    log.error("the HTTP server thread stopped unexpectedly")
                    return EXIT_FAILED
        finally:
            server.shutdown()
            server.server_close()
            predictor.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return serve(
        args.bundle,
        args.host,
        args.port,
        args.runtime,
        args.threads,
        args.score_threshold,
        ServeSettings(
            project=args.project,
            iteration=args.iteration,
            max_body_bytes=args.max_body_bytes,
            allow_url=not args.no_url,
        ),
    )
