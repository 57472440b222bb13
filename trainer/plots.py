"""PNG plots of training curves and evaluation results; matplotlib's Agg backend, no torch.

Each function writes files and returns their paths, so a caller can list them in a report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build machine or CI
import matplotlib.pyplot as plt
import numpy as np

DPI = 100
#: Confusion matrices larger than this many classes drop the per-cell counts (unreadable).
MAX_ANNOTATED_CLASSES = 20


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_history(rows: list[dict[str, Any]], metric_name: str, out_dir: Path) -> list[Path]:
    """``loss.png`` (train and val loss) and ``metric.png`` (val metric) per epoch."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "val_loss"):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".", label=key.replace("_", " "))
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    ax.legend()
    ax.grid(alpha=0.3)
    paths = [_save(fig, out_dir / "loss.png")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [float(r["val_metric"]) for r in rows], marker=".", color="tab:green")
    ax.set(xlabel="epoch", ylabel=metric_name, title=f"validation {metric_name}", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "metric.png"))
    return paths


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """Rows true class, columns predicted; colour by row share so rare classes show too."""
    matrix = np.asarray(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    if len(classes) <= MAX_ANNOTATED_CLASSES:
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    return _save(fig, path)


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "class"


def plot_pr_curves(
    curves: dict[str, dict[str, np.ndarray]], recommended: dict[str, Any], out_dir: Path
) -> list[Path]:
    """One ``<class>.png`` per class: precision over recall, the best-F1 point marked."""
    paths = []
    for name, curve in curves.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(curve["recall"], curve["precision"], drawstyle="steps-post")
        best = recommended.get(name) or {}
        if best.get("threshold") is not None:
            ax.plot(best["recall"], best["precision"], "o", color="tab:red",
                    label=f"best F1 {best['f1']:.2f} at score {best['threshold']:.2f}")  # fmt: skip
            ax.legend(loc="lower left")
        ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall: {name}",
               xlim=(0, 1.02), ylim=(0, 1.02))  # fmt: skip
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out_dir / f"{_file_name(name)}.png"))
    return paths
