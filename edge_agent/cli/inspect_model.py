"""``edge-agent inspect-model``: print a model's inputs and outputs, optionally write a
manifest skeleton to complete (edge_agent/runtimes/inspect.py does the reading)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent inspect-model",
        description="Print the names, shapes, dtypes and quantization of a model's inputs and "
        "outputs: what a bundle manifest must name.",
    )
    parser.add_argument("file", type=Path, help=".onnx or .tflite model file")
    parser.add_argument(
        "--manifest", type=Path, help="also write a manifest skeleton to complete to this file"
    )
    return parser


def inspect(file: Path, manifest: Path | None = None) -> int:
    from edge_agent.runtimes.inspect import inspect_model

    if not file.is_file():
        print(f"error: {file}: no such model file", file=sys.stderr)
        return EXIT_BAD_INPUT
    if manifest is not None and not manifest.parent.is_dir():  # before reading the model
        print(f"error: --manifest {manifest}: no such folder {manifest.parent}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print(inspect_model(file, manifest))
    # ModelRuntimeError (a RuntimeError) names the extra when the runtime is not installed;
    # the interpreters raise ValueError or RuntimeError on a file they cannot read.
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the manifest could not be written (permissions, a full disk)
        print(f"error: --manifest {manifest}: cannot write it: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return inspect(args.file, args.manifest)
