"""``edge-agent serve``: load a bundle and answer Custom Vision-style prediction requests over
HTTP until SIGINT/SIGTERM. The server itself is edge_agent/serve/server.py."""

from __future__ import annotations

import argparse
import functools
import logging
import operator
import sys
import threading
from pathlib import Path

from edge_agent.bundle import BundleError, load_bundle
from edge_agent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    int_in,
    stop_on_signals,
)
from edge_agent.logsetup import configure_logging
from edge_agent.predictor import Predictor
from edge_agent.runtimes import ModelRuntimeError
from edge_agent.serve.addresses import UrlAllowList
from edge_agent.serve.fetch import DEFAULT_URL_FETCH_TIMEOUT_S
from edge_agent.serve.images import DEFAULT_MAX_PIXELS
from edge_agent.serve.request import DEFAULT_MAX_BODY_BYTES
from edge_agent.serve.server import PredictionServer
from edge_agent.serve.settings import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_DECODES,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SOCKET_TIMEOUT_S,
    ServeSettings,
)

log = logging.getLogger("edge_agent.serve")  # the name docs/serve.md shows

#: How often the main thread checks that the HTTP thread is still alive, seconds.
WATCH_INTERVAL_S = 0.5


def fraction(text: str) -> float:
    """An argparse type: a score threshold from 0 to 1 (as the config's model.score_threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a duration in seconds, > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def allow_list(text: str) -> UrlAllowList:
    try:
        return UrlAllowList.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent serve",
        description="Answer Custom Vision-style prediction requests (POST /image, POST /url, "
        "GET /health) over HTTP with a model bundle; see docs/serve.md.",
    )
    parser.add_argument("bundle", type=Path, help="model bundle folder or .tar.gz archive")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int_in(0, 65535), default=8080, help="TCP port")
    parser.add_argument(
        "--runtime",
        choices=["onnx", "tflite"],
        help="inference runtime (default: the one for the bundle's model format)",
    )
    parser.add_argument("--threads", type=int_in(1, 64), default=2, help="runtime threads")
    parser.add_argument(
        "--score-threshold",
        type=fraction,
        help="override the bundle's score threshold, 0 to 1 (its per-class ones still win)",
    )
    parser.add_argument("--project", default="", help="project id echoed in answers")
    parser.add_argument("--iteration", default="", help="iteration name echoed in answers")
    parser.add_argument(
        "--max-body-bytes",
        type=int_in(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body, and largest image fetched by /url, bytes",
    )
    parser.add_argument(
        "--max-pixels",
        type=int_in(1),
        default=DEFAULT_MAX_PIXELS,
        help="largest image decoded, width x height; larger ones are refused by their header "
        f"(default {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--max-connections",
        type=int_in(1, 10_000),
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections served at once; one more is answered 503 and closed "
        f"(default {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--max-decodes",
        type=int_in(1, 64),
        default=DEFAULT_MAX_DECODES,
        help="images decoded and run at once; more wait up to --request-timeout-s for a turn, "
        f"then get 503 (default {DEFAULT_MAX_DECODES})",
    )
    parser.add_argument(
        "--request-timeout-s",
        type=seconds,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="headers and body of a request must arrive within this, seconds "
        f"(default {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--socket-timeout-s",
        type=seconds,
        default=DEFAULT_SOCKET_TIMEOUT_S,
        help="longest wait for one read or write, and for the next request on a kept-alive "
        f"connection, seconds (default {DEFAULT_SOCKET_TIMEOUT_S:g})",
    )
    url = parser.add_mutually_exclusive_group()
    url.add_argument(
        "--allow-url",
        action="store_true",
        help="turn POST /url on: the server downloads the image a client names (public "
        "addresses only, unless --url-allow names others)",
    )
    url.add_argument(
        "--no-url", action="store_true", help="deprecated: POST /url is off unless --allow-url"
    )
    parser.add_argument(
        "--url-allow",
        type=allow_list,
        action="append",
        default=[],
        metavar="CIDR_OR_HOST,...",
        help="non-public networks and host names /url may fetch from, e.g. "
        "10.0.0.0/8,camera.local (needs --allow-url; may be repeated)",
    )
    parser.add_argument(
        "--url-timeout-s",
        type=seconds,
        default=DEFAULT_URL_FETCH_TIMEOUT_S,
        help=f"deadline of a /url download, seconds (default {DEFAULT_URL_FETCH_TIMEOUT_S:g})",
    )
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
        # A model that does not fit its manifest answers nothing (BundleError names each field).
        predictor = Predictor.proven(bundle, runtime, threads, score_threshold)
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
    m, s = bundle.manifest, server.settings
    with stop_on_signals(stop.set):
        thread.start()
        log.info(
            "serving %s (%s, %d labels) on %s: POST /image, %sGET /health",
            bundle.model_id,
            m.task,
            len(m.labels),
            server.url,
            "POST /url, " if s.allow_url else "",
        )
        if s.allow_url:
            log.info("POST /url fetches from public addresses and from %s", s.url_allow)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url_allow and not args.allow_url:
        parser.error("--url-allow needs --allow-url (POST /url is off without it)")
    configure_logging("INFO")
    if args.no_url:
        log.warning("--no-url is deprecated: POST /url is off unless --allow-url is given")
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
            max_pixels=args.max_pixels,
            url_fetch_timeout_s=args.url_timeout_s,
            allow_url=args.allow_url,
            url_allow=functools.reduce(operator.or_, args.url_allow, UrlAllowList()),
            request_timeout_s=args.request_timeout_s,
            socket_timeout_s=args.socket_timeout_s,
            max_connections=args.max_connections,
            max_decodes=args.max_decodes,
        ),
    )
