"""``edge-trainer export RUN --format onnx|tflite [--int8] ...``: argparse wiring and handler.

trainer/cli.py calls ``add_export_commands(sub)``. torch (and litert-torch) are imported in the
handler only, so the dataset and signing commands keep working without the train extra. Exit
codes: 0 done; 1 the FP32 file disagrees with PyTorch (an exporter bug: report written, no
bundle); 2 bad input (``error: ...`` on stderr, no traceback); 3 INT8 is over a budget
(``--budget-points``, ``--map-budget-points``, ``--map75-budget-points``,
``--max-class-drop-points``, ``--max-flips-pct``; report written, no bundle) unless
``--allow-drop``. Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_agent.bundle.signing import KeyFormatError
from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_OVER_BUDGET
from trainer.cli_support import INPUT_ERRORS, console_log, error, non_negative, positive
from trainer.int8_gate import (  # torch-free
    BUDGET_POINTS,
    CHECK_NAMES,
    MAP75_BUDGET_POINTS,
    MAP_BUDGET_POINTS,
    MAX_CLASS_DROP_POINTS,
    MAX_FLIPS_PCT,
)

#: Export reads only the run, its dataset and a --sign key from the user; a BundleError here
#: would be on a bundle the trainer wrote itself, a bug, so it is not caught.
EXPORT_INPUT_ERRORS = (*INPUT_ERRORS, KeyFormatError)
#: Same values as trainer.export (that module imports torch-adjacent code; this one must not).
FORMATS = ("onnx", "tflite")
CALIB_IMAGES = 100
INSTALL_HINT = "export needs the train extra: pip install 'edgesight[train]'"


def add_export_commands(subparsers: Any) -> None:
    """Register ``export`` on an ``add_subparsers()`` object."""
    ex = subparsers.add_parser(
        "export",
        help="export a run's best.pt to a verified ONNX or TFLite bundle",
        description="Export, quantize (--int8), evaluate the file through edge_agent on the "
        "run's val split, and write a bundle with metrics, thresholds and report.md.",
    )
    ex.add_argument("run", type=Path, metavar="RUN", help="run folder (config.json, best.pt)")
    ex.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default="onnx",
        help="onnx (onnxruntime) or tflite (LiteRT); default onnx",
    )
    ex.add_argument("--int8", action="store_true", help="full INT8 (static, calibrated)")
    ex.add_argument(
        "--calib-images",
        metavar="N",
        type=positive,
        default=CALIB_IMAGES,
        help=f"training images to calibrate INT8 with ({CALIB_IMAGES})",
    )
    ex.add_argument(
        "--out",
        type=Path,
        metavar="BUNDLE_DIR",
        help="bundle folder (default RUN/export-FORMAT[-int8])",
    )
    ex.add_argument(
        "--allow-drop",
        action="store_true",
        help="write the INT8 bundle even when it is over a budget (exit 0, not 3)",
    )
    ex.add_argument(
        "--budget-points",
        metavar="P",
        type=float,
        default=BUDGET_POINTS,
        help="INT8 may lose this many points (1 = 0.01) of accuracy (classifiers), mAP over "
        f"labels (multilabel) or mAP@.5 (detectors) ({BUDGET_POINTS:g})",
    )
    ex.add_argument(
        "--map-budget-points",
        metavar="P",
        type=float,
        default=MAP_BUDGET_POINTS,
        help="detectors: INT8 may lose this many points of mAP@[.5:.95], where boxes that "
        f"moved show and mAP@.5 forgives them ({MAP_BUDGET_POINTS:g})",
    )
    ex.add_argument(
        "--map75-budget-points",
        metavar="P",
        type=float,
        default=MAP75_BUDGET_POINTS,
        help=f"detectors: INT8 may lose this many points of mAP@.75 ({MAP75_BUDGET_POINTS:g})",
    )
    ex.add_argument(
        "--max-class-drop-points",
        metavar="P",
        type=float,
        default=MAX_CLASS_DROP_POINTS,
        help="no class may lose more points of its F1 at the shipped thresholds (detectors: "
        f"AP@.5) ({MAX_CLASS_DROP_POINTS:g})",
    )
    ex.add_argument(
        "--max-flips-pct",
        metavar="PCT",
        type=float,
        default=MAX_FLIPS_PCT,
        help="classifiers: at most this %% of decisions at the shipped thresholds may differ "
        f"from FP32's ({MAX_FLIPS_PCT:g})",
    )
    ex.add_argument(
        "--data", type=Path, metavar="DIR", help="dataset folder, if it moved since training"
    )
    ex.add_argument("--name", help="bundle name (default: the run folder's name)")
    ex.add_argument(
        "--model-version", type=non_negative, default=1, metavar="N", help="bundle version (1)"
    )
    ex.add_argument("--recipe", help="recipe name for the manifest (default MODEL-PRESET)")
    ex.add_argument(
        "--eval-images", type=positive, metavar="N", help="score at most N val images (all)"
    )
    ex.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    ex.add_argument("--sign", type=Path, metavar="KEY", help="sign with this private key")
    ex.add_argument("--pack", action="store_true", help="also write BUNDLE_DIR.tar.gz")
    ex.add_argument("--threads", type=positive, default=2, metavar="N", help="runtime threads (2)")
    ex.add_argument(
        "--verbose",
        action="store_true",
        help="show the TFLite converter's output (else it goes to BUNDLE_DIR.convert.log)",
    )
    ex.set_defaults(func=run_export)


def _summary(result: Any) -> list[str]:
    report = result.report
    shipped = report["artifacts"]["int8" if report["precision"] == "int8" else "fp32"]
    headline = ", ".join(
        f"{k} {shipped['metrics'][k]:.4f}"
        for k in report["headline_keys"]
        if isinstance(shipped["metrics"].get(k), float)
    )
    lines = [
        f"exported {report['model_file']} ({shipped['bytes']} bytes) -> {result.bundle}",
        f"{headline} on {report['eval']['images']} val images (through edge_agent)",
    ]
    for pair, figures in report["parity"].items():
        agree = {k: v for k, v in figures.items() if k.endswith("agreement") and v is not None}
        extra = "".join(f", {k} {v:.4f}" for k, v in agree.items())
        lines.append(f"parity {pair}: max relative diff {figures['max_relative_diff']:.2e}{extra}")
    gate = report["int8_budget"]
    if gate:
        lines += [f"INT8 {gate[k]['text']}" for k in CHECK_NAMES if gate.get(k)]
        lines += gate["resolution"]["lines"]
    lines.append(f"report: {result.bundle / 'report.md'}")
    return lines


def run_export(args: argparse.Namespace) -> int:
    if not args.run.is_dir():
        return error(f"{args.run}: no such run folder (expected config.json and best.pt in it)")
    if args.name is not None and not args.name.strip():
        return error(f"--name must not be empty, got {args.name!r}")
    if args.sign is not None and not args.sign.is_file():
        return error(f"{args.sign}: no such private key file")
    try:
        from trainer.export import (
            BudgetExceeded,
            ExportOptions,
            ParityError,
            export_run,
        )
        from trainer.signing_cli import pack_bundle, sign_bundle
    except ImportError as exc:
        return error(f"{INSTALL_HINT} ({exc})")
    opts = ExportOptions(
        fmt=args.fmt,
        int8=args.int8,
        calib_images=args.calib_images,
        out=args.out,
        allow_drop=args.allow_drop,
        budget_points=args.budget_points,
        max_class_drop_points=args.max_class_drop_points,
        max_flips_pct=args.max_flips_pct,
        map_budget_points=args.map_budget_points,
        map75_budget_points=args.map75_budget_points,
        data=args.data,
        name=args.name,
        version=args.model_version,
        recipe=args.recipe,
        eval_images=args.eval_images,
        force=args.force,
        threads=args.threads,
        verbose=args.verbose,
    )
    try:
        with console_log():
            result = export_run(args.run, opts)
        lines = _summary(result)
        if args.fmt == "tflite" and not args.verbose:
            from trainer.export_tflite import convert_log_path

            lines.append(f"converter log: {convert_log_path(result.bundle)}")
        if args.sign is not None:
            fingerprint = sign_bundle(result.bundle, args.sign)
            lines.append(f"signed {result.bundle / 'manifest.sig'} with key {fingerprint}")
        if args.pack:
            archive = pack_bundle(
                result.bundle, result.bundle.with_name(result.bundle.name + ".tar.gz")
            )
            lines.append(f"packed {archive}")
    except BudgetExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OVER_BUDGET
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED  # the export ran and its parity check failed
    except EXPORT_INPUT_ERRORS as exc:  # ExportError is an InputError
        return error(exc)
    for line in lines:
        print(line)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """A parser with only ``export``: ``python -m trainer.export_cli export RUN ...``."""
    parser = argparse.ArgumentParser(prog="edge-trainer", description="Export edgesight runs.")
    add_export_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
