"""What ``edge-trainer evaluate`` prints from a report.json: the headline and a per-class table."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def headline(report: dict[str, Any]) -> str:
    """The one-line summary the CLI prints."""
    m = {k: "n/a" if v is None else f"{v:.3f}" for k, v in report["metrics"].items()
         if k in ("mAP", "mAP50", "accuracy", "macro_f1")}  # fmt: skip
    if report["task"] == "detect":
        return f"mAP@.5 {m['mAP50']}, mAP@[.5:.95] {m['mAP']}"
    if report["multilabel"]:
        at = report["metrics"]["threshold"]
        where = "the bundle's per-label thresholds" if isinstance(at, dict) else f"{at:g}"
        return f"mAP {m['mAP']}, macro F1 {m['macro_f1']} at {where}"
    return f"accuracy {m['accuracy']}, macro F1 {m['macro_f1']}"


def _cell(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _threshold(value: Any) -> str:
    """A threshold as it is written in the manifest (4 decimals), not cut to 3."""
    return "n/a" if value is None else f"{value:g}"


def per_class_table(report: dict[str, Any]) -> list[str]:
    """Per-class figures as aligned text lines: precision/recall/F1 for classifiers (with AP for
    multilabel ones, and each label's threshold when they differ: a bundle's), AP@.5 and
    AP@[.5:.95] for detectors; support or ground-truth boxes last."""
    per = report["metrics"]["per_class"]
    if report["task"] == "detect":
        columns = [("AP@.5", "ap50"), ("AP@[.5:.95]", "ap"), ("boxes", "ground_truths")]
    elif report["multilabel"]:
        columns = [("AP", "ap"), ("precision", "precision"), ("recall", "recall"),
                   ("F1", "f1"), ("support", "support")]  # fmt: skip
        if isinstance(report["metrics"]["threshold"], dict):  # one per label: a bundle's
            columns.insert(1, ("threshold", "threshold"))
    else:
        columns = [("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
                   ("support", "support")]  # fmt: skip
    rows = [["class", *(title for title, _ in columns)]]
    rows += [[name, *(_threshold(row.get(key)) if key == "threshold" else _cell(row.get(key))
                      for _, key in columns)] for name, row in per.items()]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def summary(report: dict[str, Any], report_path: Path) -> list[str]:
    """What ``edge-trainer evaluate`` prints: the headline once, then the per-class table."""
    images = report["metrics"]["images"]
    first = f"{headline(report)} on {images} images ({report['images']}) -> {report_path}"
    lines = [first, *per_class_table(report)]
    if "bundle" in report:  # what export would ship, measured on these images
        chosen = report["recommended_thresholds"]
        shown = ", ".join(f"{k} {_threshold(v)}" for k, v in chosen.items())
        lines.append(f"thresholds from this evaluation (thresholds.per_class): {shown or 'none'}")
    return lines
