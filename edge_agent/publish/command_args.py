"""Each command's arguments: strict pydantic models (unknown keys and loose types refused).

Split from commands.py, which parses, checks and dispatches: the command set of the MQTT
contract (docs/commands.md) reads here as one table.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.config.ids import SOURCE_ID_CHARS, check_id


class _Args(BaseModel):
    """Arguments of one command: unknown keys and loose types are refused, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoArgs(_Args):
    """ping, reload_config, get_config, get_stats."""


class SetThresholdArgs(_Args):
    score: float = Field(gt=0, le=1, description="New score threshold, in (0, 1].")
    label: str | None = Field(
        None, min_length=1, max_length=256, description="Only this label; all when absent."
    )


class SnapshotArgs(_Args):
    source: str = Field(description="Source id whose current frame to snapshot.")

    @field_validator("source")
    @classmethod
    def _source_id(cls, value: str) -> str:
        return check_id(value, SOURCE_ID_CHARS, ())


class UpdateModelArgs(_Args):
    url: str = Field(min_length=1, max_length=2048, description="Where the bundle archive is.")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="The archive's sha256.")
    size: int = Field(gt=0, description="The archive's size in bytes.")
    version: int = Field(ge=0, description="The bundle's manifest version.")
    name: str | None = Field(None, min_length=1, max_length=128, description="Model name.")


#: The command set of the MQTT contract and each one's arguments.
COMMAND_ARGS: dict[str, type[_Args]] = {
    "ping": NoArgs,
    "snapshot": SnapshotArgs,
    "set_threshold": SetThresholdArgs,
    "reload_config": NoArgs,
    "get_config": NoArgs,
    "get_stats": NoArgs,
    "update_model": UpdateModelArgs,
    "rollback_model": NoArgs,
}
