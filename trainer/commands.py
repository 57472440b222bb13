"""``edge-trainer train`` and ``edge-trainer evaluate``: argparse wiring and handlers.

torch is imported inside the handlers only, so the dataset commands (convert, inspect, synth)
keep working on a machine without the ``train`` extra. A handler returns an exit code: 0 done,
2 bad input (``error: ...`` on stderr, no traceback), 1 a run that failed (diverged). Any other
exception is a bug and propagates (see trainer.cli_support).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_agent.bundle.cache import is_archive_name
from edge_agent.cli.common import EXIT_FAILED, EXIT_OK
from edge_agent.runtimes import ModelRuntimeError
from trainer.cli_support import (
    AGENT_INPUT_ERRORS,
    INPUT_ERRORS,
    console_log,
    error,
    fraction,
    non_negative,
    positive,
    positive_float,
)
from trainer.run_config import CONFIG_FILE, RunConfig

TASKS = ("classify", "detect")
#: trainer.evaluate's BUNDLE_THREADS and metrics.DEFAULT_THRESHOLD (trainer.evaluate imports
#: matplotlib; this module stays light).
BUNDLE_THREADS = 2
DEFAULT_THRESHOLD = 0.5
#: Same names as trainer.presets.PRESETS (that module imports torch; this one must not).
PRESET_NAMES = ("none", "light", "default", "strong")
#: Same names as trainer.pretrained.NAMES (torchvision's files; that module imports torch).
WEIGHTS_NAMES = ("imagenet", "coco")
INSTALL_HINT = "training needs the train extra: pip install 'edgesight[train]'"


def add_train_commands(subparsers: Any) -> None:
    """Register ``train`` and ``evaluate`` on an ``add_subparsers()`` object."""
    tr = subparsers.add_parser(
        "train", help="train a classifier or detector into a run folder",
        description="Train a model; writes config.json, metrics.csv, checkpoints and best.pt.",
    )  # fmt: skip
    tr.add_argument("--task", choices=TASKS, help="classify or detect (not with --resume)")
    tr.add_argument("--model", help="model name, e.g. mobilenet_v3_small (not with --resume)")
    tr.add_argument("--data", type=Path, help="dataset folder or file (not with --resume)")
    tr.add_argument("--epochs", type=positive, required=True, help="total epochs")
    tr.add_argument("--out", type=Path, required=True, metavar="RUN", help="new run folder")
    tr.add_argument(
        "--weights", metavar="imagenet|coco|PATH",
        help="start from torchvision's ImageNet or COCO weights, or a local .pt (docs/training.md)",
    )  # fmt: skip
    tr.add_argument(
        "--download-weights", action="store_true",
        help="fetch named weights into torch's cache if missing (else: EDGESIGHT_ALLOW_DOWNLOAD=1)",
    )  # fmt: skip
    tr.add_argument("--size", type=positive, help="input side, px (224 / 320)")
    tr.add_argument("--batch", type=positive, help="batch size (32 classify, 8 detect)")
    tr.add_argument("--lr", type=positive_float, help="peak AdamW LR (2e-3 / 3e-3)")
    tr.add_argument("--preset", default="default", help=f"augmentation: {', '.join(PRESET_NAMES)}")
    tr.add_argument("--seed", type=int, default=0, help="seed for split, order, augmentation (0)")
    tr.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    tr.add_argument(
        "--patience", type=non_negative, default=0, help="stop after N flat epochs (0: off)"
    )
    tr.add_argument(
        "--workers", type=non_negative, default=0, help="DataLoader worker processes (0)"
    )
    tr.add_argument("--val-fraction", type=fraction, default=0.2, help="val share if no val split")
    tr.add_argument("--threads", type=positive, help="torch CPU threads (default: torch's own)")
    tr.add_argument(
        "--freeze-epochs", type=non_negative, default=0, help="with --weights: head-only epochs"
    )
    tr.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    tr.set_defaults(func=run_train)

    ev = subparsers.add_parser(
        "evaluate", help="score a run, checkpoint or exported bundle on a dataset",
        description="Write report.json, a confusion matrix or PR curves, and thresholds per "
        "class. A bundle (a folder with manifest.json, or its .tar.gz) is run through the "
        "agent's own pre-processing, runtime and decoder, as on the device.",
    )  # fmt: skip
    ev.add_argument("run", type=Path, metavar="RUN|CHECKPOINT|BUNDLE",
                    help="run folder, .pt file, or bundle folder/archive")  # fmt: skip
    ev.add_argument("--data", type=Path, required=True, help="dataset folder or file")
    ev.add_argument("--out", type=Path, help="report folder (default: RUN/eval, BUNDLE-eval)")
    ev.add_argument("--threshold", type=fraction, help="multilabel: count labels at this score "
                    "(default: 0.5 for a run, the bundle's own per-label thresholds)")  # fmt: skip
    ev.add_argument("--device", help="cpu, cuda (default: cuda when available; not for bundles)")
    ev.add_argument("--threads", type=positive, help="torch or runtime CPU threads")
    ev.set_defaults(func=run_evaluate)


def _check_train_args(args: argparse.Namespace) -> str | None:
    if args.resume:
        if not (args.out / CONFIG_FILE).is_file():
            return f"cannot resume: {args.out} has no {CONFIG_FILE} (not a run folder)"
        return None
    missing = [f"--{k}" for k in ("task", "model", "data") if getattr(args, k) is None]
    if missing:
        return f"missing {', '.join(missing)}: required unless --resume"
    if not args.data.exists():
        return f"{args.data}: no such dataset file or folder"
    if args.weights not in (None, *WEIGHTS_NAMES) and not Path(args.weights).is_file():
        return f"weights file not found: {args.weights} (or a name: {', '.join(WEIGHTS_NAMES)})"
    if args.preset not in PRESET_NAMES:
        return f"unknown preset {args.preset!r}: expected one of {list(PRESET_NAMES)}"
    return None


def run_train(args: argparse.Namespace) -> int:
    if problem := _check_train_args(args):
        return error(problem)
    try:
        from trainer.train import train
    except ImportError as exc:
        return error(f"{INSTALL_HINT} ({exc})")
    try:
        with console_log():
            run = train(
                args.task, args.model, args.data, args.out, args.epochs, batch_size=args.batch,
                lr=args.lr, size=args.size, preset=args.preset, seed=args.seed,
                weights=args.weights, resume=args.resume, patience=args.patience,
                device=args.device, val_fraction=args.val_fraction, workers=args.workers,
                threads=args.threads, freeze_epochs=args.freeze_epochs,
                download_weights=args.download_weights,
            )  # fmt: skip
    except INPUT_ERRORS as exc:
        return error(exc)
    except FloatingPointError as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"error: interrupted; continue with --resume --out {args.out}", file=sys.stderr)
        return 130
    config = RunConfig.read(run / CONFIG_FILE)
    print(f"trained {config.model}: best {config.metric} {config.best_metric:.4f} "
          f"at epoch {config.best_epoch} -> {run / 'best.pt'}")  # fmt: skip
    return EXIT_OK


def is_bundle(path: Path) -> bool:
    """A bundle folder holds manifest.json; a bundle archive is a .tar.gz, .tgz or .tar."""
    if path.is_dir():
        return (path / "manifest.json").is_file()
    return is_archive_name(path)


def run_evaluate(args: argparse.Namespace) -> int:
    if not args.run.exists():
        return error(f"{args.run}: no such run folder or checkpoint, nor a bundle")
    if not args.data.exists():
        return error(f"{args.data}: no such dataset file or folder")
    bundle = is_bundle(args.run)
    if bundle and args.device:
        return error("--device is for runs; a bundle runs in the agent's runtime (its --threads)")
    try:
        from trainer.evaluate import default_bundle_out, evaluate, evaluate_bundle, summary
    except ImportError as exc:
        return error(f"{INSTALL_HINT} ({exc})")
    try:
        with console_log():
            if bundle:
                threads = args.threads or BUNDLE_THREADS
                report = evaluate_bundle(args.run, args.data, args.out, threads=threads,
                                         threshold=args.threshold)  # fmt: skip
            else:
                threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
                report = evaluate(args.run, args.data, args.out, device=args.device,
                                  threshold=threshold, threads=args.threads)  # fmt: skip
    except (*INPUT_ERRORS, *AGENT_INPUT_ERRORS, ModelRuntimeError) as exc:
        return error(exc)
    if args.out:
        out = args.out
    elif bundle:
        out = default_bundle_out(args.run)
    else:
        out = Path(report["checkpoint"]).parent / "eval"
    for line in summary(report, out / "report.json"):
        print(line)
    return EXIT_OK
