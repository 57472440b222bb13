"""``edge-trainer``: dataset tooling (convert, inspect, synth). Training commands come later.

Bad input (a broken dataset, a wrong flag, a full disk) prints ``error: <message>`` to stderr
and returns 2 (trainer.cli_support.INPUT_ERRORS); any other exception is a bug in this code and
propagates with its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_OK
from trainer import __version__
from trainer.cli_support import INPUT_ERRORS, error, split_fraction
from trainer.commands import add_train_commands
from trainer.datasets import (
    BOX_SLACK_PX,
    FORMATS,
    IMAGE_MODES,
    Dataset,
    DatasetError,
    conversion_problem,
    detect_format,
    from_boxes,
    load,
    save,
    split,
)
from trainer.datasets.multilabel import MIN_AREA, MIN_VISIBLE
from trainer.datasets.stats import size_range, summarize, warnings
from trainer.export_cli import add_export_commands
from trainer.fleet_cli import add_fleet_commands
from trainer.import_field import add_import_field_command
from trainer.signing_cli import add_signing_commands
from trainer.synth import DEFAULT_SIZE, KINDS, SYNTH_FORMATS, generate
from trainer.synth import MIN_VISIBLE as SYNTH_MIN_VISIBLE


def _size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (pixels)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 320x320, got {text!r}") from None
    return width, height


def _share(text: str) -> float:
    """A share in [0, 1], both ends included (--min-visible 1: wholly inside)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-trainer", description="Datasets, training and bundles for edgesight models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formats = sorted(FORMATS)

    conv = sub.add_parser("convert", help="convert a dataset between formats")
    conv.add_argument("--from", dest="src", choices=formats, help="input format (default: detect)")
    conv.add_argument("--to", dest="dst", choices=formats, required=True, help="output format")
    conv.add_argument(
        "--val-fraction", type=split_fraction, default=0.0,
        help="re-split into train/val with this val share (default 0: keep the input's splits)",
    )  # fmt: skip
    conv.add_argument("--seed", type=int, default=0, help="seed of --val-fraction's split")
    conv.add_argument(
        "--images", choices=IMAGE_MODES, default="copy", help="how images reach OUT (copy)"
    )
    conv.add_argument(
        "--min-visible", type=_share, metavar="F",
        help=f"boxes to multilabel: a box names its class if at least F of its area is inside "
        f"the image ({MIN_VISIBLE})",
    )  # fmt: skip
    conv.add_argument(
        "--min-area", type=_share, metavar="F",
        help=f"boxes to multilabel: ... and its part inside covers F of the image ({MIN_AREA:g})",
    )  # fmt: skip
    conv.add_argument("input", metavar="IN", type=Path)
    conv.add_argument("output", metavar="OUT", type=Path, help="a new or empty folder")
    conv.set_defaults(func=_convert)

    insp = sub.add_parser("inspect", help="validate a dataset and print counts and warnings")
    insp.add_argument("data", metavar="DATA", type=Path)
    insp.add_argument("--format", choices=formats, help="dataset format (default: detect)")
    insp.set_defaults(func=_inspect)

    syn = sub.add_parser("synth", help="render a synthetic dataset with exact labels")
    syn.add_argument("--kind", choices=sorted(KINDS), required=True)
    syn.add_argument("--n", type=int, required=True, help="number of scenes to render")
    syn.add_argument("--format", choices=SYNTH_FORMATS, required=True)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--size", type=_size, default=DEFAULT_SIZE, help="WxH pixels (320x320)")
    syn.add_argument("--val-fraction", type=split_fraction, default=0.2, help="0 = no split (0.2)")
    syn.add_argument("--workers", type=int, default=1, help="rendering processes (1)")
    syn.add_argument(
        "--min-visible", type=_share, default=SYNTH_MIN_VISIBLE, metavar="F",
        help=f"label objects with at least F of their pixels visible ({SYNTH_MIN_VISIBLE})",
    )  # fmt: skip
    syn.add_argument("output", metavar="OUT", type=Path, help="a new or empty folder")
    syn.set_defaults(func=_synth)

    add_train_commands(sub)  # train, evaluate
    add_export_commands(sub)  # export
    add_signing_commands(sub)  # keygen, sign, pack
    add_fleet_commands(sub)  # push, fleet status, fleet rollout
    add_import_field_command(sub)  # import-field (the agent's collect stage)
    return parser


def _convert(args: argparse.Namespace) -> int:
    if args.src and (problem := conversion_problem(args.src, args.dst)):
        raise DatasetError(problem)
    if args.output.resolve().is_relative_to(args.input.resolve()):
        raise DatasetError(f"{args.output}: the output folder must not be inside the input")
    src = args.src or detect_format(args.input)
    if problem := conversion_problem(src, args.dst):
        raise DatasetError(problem)
    to_labels = FORMATS[src].task == "detect" and args.dst == "multilabel"
    _check_label_flags(args, src, to_labels)
    # boxes that leave the frame are what --min-visible measures: keep them, unclipped
    dataset = load(args.input, src, slack_px=math.inf if to_labels else BOX_SLACK_PX)
    boxes = sum(len(s.boxes) for s in dataset.samples)
    dropped = 0
    if to_labels:
        min_visible = MIN_VISIBLE if args.min_visible is None else args.min_visible
        min_area = MIN_AREA if args.min_area is None else args.min_area
        dataset, dropped = from_boxes(dataset, min_visible, min_area)
    if args.val_fraction > 0:  # after from_boxes, so the split is stratified by the labels kept
        dataset = split(dataset, args.val_fraction, args.seed)
    save(dataset, args.output, args.dst, images=args.images)
    print(
        f"converted {len(dataset.samples)} images ({boxes} boxes, {len(dataset.classes)} "
        f"classes) from {src} to {args.dst}: {args.output}"
    )
    if to_labels:
        labels = sum(len(s.labels) for s in dataset.samples)
        negatives = sum(not s.labels for s in dataset.samples)
        print(
            f"labels: {labels} image labels from {boxes - dropped} boxes; {dropped} boxes below "
            f"--min-visible {min_visible:g} or --min-area {min_area:g} did not count; "
            f"{negatives} images without labels kept as negatives"
        )
    difficult = sum(b.difficult for s in dataset.samples for b in s.boxes)
    if difficult and args.dst == "yolo":
        print(f"note: yolo has no 'difficult' flag; {difficult} such boxes are now ordinary")
    if args.dst == "yolo" and "val" not in dataset.split_names():
        print("note: no val split, data.yaml's val points at train; use --val-fraction 0.2")
    return EXIT_OK


def _check_label_flags(args: argparse.Namespace, src: str, to_labels: bool) -> None:
    """--min-visible and --min-area only mean something when boxes become image labels."""
    given = [f for f, v in (("--min-visible", args.min_visible), ("--min-area", args.min_area))
             if v is not None]  # fmt: skip
    if given and not to_labels:
        raise DatasetError(
            f"{' and '.join(given)}: only for boxes becoming image labels: expected "
            f"--to multilabel from coco, voc or yolo, got {src} to {args.dst}"
        )


def _inspect(args: argparse.Namespace) -> int:
    fmt = args.format or detect_format(args.data)
    dataset = load(args.data, fmt)
    for line in describe(dataset, f"{args.data} ({fmt})"):
        print(line)
    return EXIT_OK


def describe(dataset: Dataset, title: str) -> list[str]:
    """The inspect report as lines: totals, sizes, a per-class table, then warnings."""
    summary = summarize(dataset)
    detect = dataset.task == "detect"
    splits = [s for s in summary.split_images if s]
    per_split = ", ".join(f"{s} {summary.split_images[s]}" for s in splits) or "no split"
    empty = "without boxes" if detect else "without labels"
    kind = "multilabel " if dataset.multilabel else ""
    lines = [
        f"dataset: {title}, {kind}{dataset.task}, {len(dataset.classes)} classes",
        f"images:  {summary.images} ({per_split}); {summary.background_images} {empty}",
    ]
    for axis, values in (("width", summary.widths), ("height", summary.heights)):
        lo, mid, hi = size_range(values)
        lines.append(f"{axis + ':':8} min {lo} / median {mid:g} / max {hi} px")
    unit = "boxes" if detect else "images"
    header = f"{'class':<16}{'images':>8}" + (f"{'boxes':>8}" if detect else "")
    header += "".join(f"{s + ' ' + unit:>{max(12, len(s) + 8)}}" for s in splits)
    lines.append(header)
    for name in dataset.classes:
        row = f"{name:<16}{summary.images_per_class[name]:>8}"
        row += f"{summary.boxes_per_class[name]:>8}" if detect else ""
        row += "".join(f"{summary.split_counts[s][name]:>{max(12, len(s) + 8)}}" for s in splits)
        lines.append(row)
    found = warnings(summary)
    lines.extend(f"WARNING: {w}" for w in found)
    if not found:
        lines.append("no warnings")
    return lines


def _synth(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise DatasetError(f"--n must be at least 1, got {args.n}")
    started = time.perf_counter()
    result = generate(
        args.kind, args.n, args.output, args.format, seed=args.seed, size=args.size,
        val_fraction=args.val_fraction, workers=max(1, args.workers),
        min_visible=args.min_visible,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    what = {"folders": "crops", "multilabel": "image labels"}.get(args.format, "boxes")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.per_class.items()))
    print(
        f"rendered {result.images} {args.kind} scenes in {seconds:.1f} s as {args.format}: "
        f"{sum(result.per_class.values())} {what} ({counts}) -> {result.out}"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        return int(args.func(args))
    except INPUT_ERRORS as exc:  # anything else is a bug: its traceback is the report
        return error(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
