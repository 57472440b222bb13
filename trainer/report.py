"""report.md's figure sections: metrics per model, per class side by side, and the INT8 gate.

trainer.bundle_writer.report_markdown frames the page (title, run, files, parity, thresholds,
warnings) and calls these; report.json carries the same numbers (trainer.export._report,
trainer.int8_gate). Rendering only: every figure here was computed elsewhere.
"""

from __future__ import annotations

from typing import Any

from trainer.int8_gate import CHECK_NAMES, TOO_SMALL

#: Row names of the models, in the order they are shown.
MODEL_ROWS = {
    "torch": "torch (best.pt, same tensors)",
    "fp32": "fp32 file",
    "int8": "int8 file",
}


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _models(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"torch"?, "fp32", "int8"?: metrics}, the torch model first."""
    models = {"torch": report["torch"]["metrics"]} if report.get("torch") else {}
    models.update({name: art["metrics"] for name, art in report["artifacts"].items()})
    return models


def metrics_section(report: dict[str, Any]) -> list[str]:
    """Headline metrics of the torch model and of each file, then train.py's own figure."""
    keys = report["headline_keys"]
    lines = ["## Metrics", "", "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, metrics in _models(report).items():
        row = [fmt(metrics.get(k)) for k in keys]
        lines.append(f"| {MODEL_ROWS.get(name, name)} | " + " | ".join(row) + " |")
    best = report.get("run_best_metric") or {}
    if best.get("value") is not None:
        lines += [
            "",
            f"train.py's validation of best.pt (its own preprocessing, torch): "
            f"{best['metric']} {fmt(best['value'])}.",
        ]
    return lines


def per_class_section(report: dict[str, Any]) -> list[str]:
    """One row per class: its support, the shipped threshold, and each model's figures."""
    per_class = report.get("per_class") or {}
    if not per_class:
        return []
    models = [name for name in _models(report) if name in next(iter(per_class.values()))]
    flips = (report.get("int8_budget") or {}).get("flips") or {}
    keys: tuple[str, ...]
    if report["task"] == "detect":
        title = "## Per class: AP@.5 / AP@[.5:.95] (COCO rules)"
        keys, support = ("ap50", "ap"), "ground truths"
    else:
        title = "## Per class: precision / recall / F1 of the decisions at the shipped thresholds"
        keys = ("precision", "recall", "f1") + (("ap",) if report["multilabel"] else ())
        support = "images"
    head = ["class", support, "threshold", *models] + (["flips"] if flips else [])
    lines = [title, "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, figures in per_class.items():
        row = [name, fmt(figures.get("support")), fmt(figures.get("threshold"))]
        row += [" / ".join(fmt(figures[m].get(k)) for k in keys) for m in models]
        row += [fmt(flips["per_class"].get(name, 0))] if flips else []
        lines.append("| " + " | ".join(row) + " |")
    if report["task"] != "detect":
        lines += [
            "",
            "Columns per model: " + " / ".join(keys) + ". The same thresholds for every model:"
            " the shipped file's, as the manifest holds them.",
        ]
    return lines


def gate_section(report: dict[str, Any]) -> list[str]:
    """The INT8 gate's checks, the decisions that flipped, and what one image weighs."""
    gate = report.get("int8_budget")
    if not gate:
        return []
    failed = ", ".join(CHECK_NAMES[name] for name in gate["failed"])
    verdict = f"OVER budget ({failed})" if failed else "within budget"
    lines = ["## INT8 gate", "", f"INT8 against FP32, {verdict}.", ""]
    lines += [f"- {gate[name]['text']}" for name in CHECK_NAMES if gate.get(name)]
    flips = gate.get("flips")
    if flips and flips["changes"]:
        lines += ["", "| decision, FP32 -> INT8 | count |", "|---|---|"]
        lines += [f"| {change} | {n} |" for change, n in flips["changes"].items()]
    res = gate["resolution"]
    if res["notes"]:
        lines += ["", "What one weighs: " + "; ".join(res["notes"]) + "."]
    if res["too_small"]:
        lines += ["", f"**Too small to judge.** {TOO_SMALL}:"]
        lines += [f"- {reason}" for reason in res["too_small"]]
    return lines
