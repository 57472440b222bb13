"""``edge-agent check-bundle``: prove a bundle's model against its manifest without a config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.bundle import BundleError, load_bundle
from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_OK, int_in


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent check-bundle",
        description="Load a bundle (folder or .tar.gz), run its model once on a blank frame and "
        "check every output its decoder reads against the manifest (names, shapes, label and "
        "anchor counts, activations); print every problem, or OK.",
    )
    parser.add_argument("bundle", type=Path, help="model bundle folder or .tar.gz archive")
    parser.add_argument(
        "--runtime",
        choices=["onnx", "tflite"],
        help="inference runtime (default: the one for the bundle's model format)",
    )
    parser.add_argument("--threads", type=int_in(1, 64), default=2, help="runtime threads")
    return parser


def check_bundle(path: Path, runtime: str | None = None, threads: int = 2) -> int:
    from edge_agent.predictor import describe_problems, prove_bundle  # loads the runtime
    from edge_agent.runtimes import ModelRuntimeError

    try:
        bundle = load_bundle(path)
        problems = prove_bundle(bundle, runtime, threads)
    except (BundleError, ModelRuntimeError, ValueError) as exc:  # ValueError: the decoder
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if problems:
        print(describe_problems(bundle, problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    m = bundle.manifest
    print(f"{bundle.source}: OK")
    print(
        f"  model    {bundle.model_id} ({m.task}, {len(m.labels)} labels, {m.model.file}, "
        f"runtime {runtime or m.model.format}, {threads} threads)"
    )
    print(f"  decoder  {m.decoder.type}: every output it reads fits the manifest")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return check_bundle(args.bundle, args.runtime, args.threads)
