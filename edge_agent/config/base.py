"""The base of every config section model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are refused: a misspelt key silently ignored is a night of debugging on a
    device nobody can reach."""

    model_config = ConfigDict(extra="forbid", frozen=True)
