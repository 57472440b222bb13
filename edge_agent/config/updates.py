"""``updates``: remote model updates (docs/updates.md) — where from, how big, how long, and
how a new model proves itself before it stays."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge_agent.config.base import Section
from edge_agent.config.ids import SOURCE_ID_CHARS, check_id

#: A bundle of an edge detector is a few MB; 2 GiB is no model a Pi or a Jetson runs.
MAX_BUNDLE_BYTES = 2 * 1024**3
#: A day: longer deadlines or windows only hide a stuck update.
MAX_WINDOW_S = 86400.0


class UpdatesConfig(Section):
    enabled: bool = Field(
        True,
        description="Accept update_model commands and the fleet's desired model. Updates also "
        "need model.public_keys: an unsigned bundle is never installed remotely.",
    )
    group: str | None = Field(
        None,
        description="Fleet group: the device follows the signed desired model retained on "
        "<prefix>/fleet/<group>/desired. None: commands only.",
    )
    allow_http: bool = Field(
        False, description="Also download from http:// URLs (the bundle is signed either way)."
    )
    allow_private_addresses: bool = Field(
        False,
        description="Download from hosts on private, loopback or link-local addresses (a LAN "
        "server). Off by default: a message on the broker must not make the device fetch from "
        "its own network.",
    )
    max_bundle_bytes: int = Field(
        200 * 1024**2,
        gt=0,
        le=MAX_BUNDLE_BYTES,
        description=f"Largest bundle archive downloaded (at most {MAX_BUNDLE_BYTES} bytes).",
    )
    read_gap_s: float = Field(
        30.0, gt=0, le=3600, description="A download with no byte for this long fails (s)."
    )
    deadline_s: float = Field(
        1800.0, gt=0, le=MAX_WINDOW_S, description="A whole download must end within this (s)."
    )
    trial_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="The candidate's test load in a child process (s)."
    )
    trial_memory_mb: int = Field(
        1024, ge=64, le=65536, description="Address-space limit of that child process (MiB)."
    )
    probation_s: float = Field(
        300.0,
        ge=0,
        le=MAX_WINDOW_S,
        description="After the swap, the new model is watched this long (NaN outputs, no "
        "detections where the old model had some, latency over twice the old one's, a crash "
        "loop) and rolled back if one holds (s).",
    )
    keep_models: int = Field(
        3, ge=2, le=20, description="Model folders kept in state_dir/models (current included)."
    )

    @field_validator("group")
    @classmethod
    def _group_is_topic_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value, SOURCE_ID_CHARS, frozenset())
