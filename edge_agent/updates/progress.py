"""The retained ``<prefix>/<device>/model`` message: which model runs, and how an update goes.

One payload shape for every state, so a dashboard or ``edge-trainer fleet status`` reads the
same keys whether the device is downloading, on trial or has rolled back (docs/updates.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

DOWNLOADING = "downloading"
VERIFYING = "verifying"
STAGED = "staged"
TRIAL = "trial"
ACTIVE = "active"
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"
STATES = (DOWNLOADING, VERIFYING, STAGED, TRIAL, ACTIVE, REJECTED, ROLLED_BACK)


@dataclass(frozen=True)
class ModelRef:
    """A model by name, version and the sha256 of its archive (or manifest, for a folder)."""

    name: str | None
    version: int | None
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def model_payload(
    state: str,
    model: ModelRef,
    *,
    reason: str | None = None,
    origin: str = "start",
    group: str | None = None,
    previous: ModelRef | None = None,
) -> dict[str, Any]:
    """The model topic's payload; `model` is the one the state is about (the candidate during
    an update, the running one when active or after a rollback)."""
    if state not in STATES:
        raise ValueError(f"model state must be one of {', '.join(STATES)}, not {state!r}")
    return {
        **model.as_dict(),
        "state": state,
        "ts": round(time.time(), 3),
        "reason": reason,
        "origin": origin,
        "group": group,
        "previous": previous.as_dict() if previous else None,
    }
