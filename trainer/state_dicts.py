"""Reading a weights file and copying what fits into a model, with an account of what did not.

Kept apart from the model registry (trainer.models) and from where named weights come from
(trainer.pretrained): both load files through these three pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import InputError

#: State-dict prefixes other tools add (DataParallel, torch.compile).
STRIP_PREFIXES = ("module.", "_orig_mod.")
#: Why a class-head tensor was not loaded even though its shape fits.
NEW_HEAD = "class head, re-initialised"


@dataclass
class LoadReport:
    """What a weights file gave the model: tensors loaded, and those skipped with why."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason

    def summary(self) -> str:
        other = {k: why for k, why in self.skipped.items() if why != NEW_HEAD}
        fresh = len(self.skipped) - len(other)
        text = f"{self.path}: loaded {len(self.loaded)} tensors"
        text += f", class head re-initialised ({fresh} tensors)" if fresh else ""
        text += f", skipped {len(other)}"
        if other:
            shown = list(other.items())[:8]
            text += ": " + "; ".join(f"{k} ({v})" for k, v in shown)
            text += " ..." if len(other) > len(shown) else ""
        return text


@dataclass
class WeightsFile:
    """A weights file's tensors, and the class names when it is one of our checkpoints."""

    path: Path
    state: dict[str, torch.Tensor]
    labels: list[str] | None = None


def read_weights(path: Path) -> WeightsFile:
    """Our checkpoint (``{"model": ..., "config": ...}``), a wrapped or a bare state dict."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise InputError(f"{path}: not a torch weights file: {exc}") from exc
    labels = None
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        found = obj["config"].get("labels")
        labels = [str(x) for x in found] if isinstance(found, list) else None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise InputError(f"{path}: expected a state dict (name -> tensor) or a checkpoint")
    out = {}
    for key, value in obj.items():
        for prefix in STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return WeightsFile(path, out, labels)


def load_matching(
    model: nn.Module, state: dict[str, torch.Tensor], path: Path, skip: tuple[str, ...] = ()
) -> LoadReport:
    """Copy the tensors whose name and shape match, except names under a ``skip`` prefix (a
    class head to start afresh); report the rest (the new head, typically)."""
    report = LoadReport(path)
    own = model.state_dict()
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.skipped[key] = "not in model"
        elif skip and key.startswith(skip):
            report.skipped[key] = NEW_HEAD
        elif own[key].shape != value.shape:
            report.skipped[key] = f"shape {tuple(value.shape)} != {tuple(own[key].shape)}"
        else:
            usable[key] = value
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    return report
