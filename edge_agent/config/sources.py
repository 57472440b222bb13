"""``sources[]``: where frames come from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.config.base import Section
from edge_agent.publish.topics import RESERVED_SOURCE_IDS

SOURCE_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


class StageConfig(Section):
    """One stage of a source's chain: ``type`` names a registered stage, the other keys are that
    stage's own options (checked against its options model)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="Stage type, e.g. counts.")

    @model_validator(mode="after")
    def _known_stage(self) -> StageConfig:
        self.options()
        return self

    def options(self) -> BaseModel:
        # Imported here: the stage registry imports the analytics stages, which need the config.
        from edge_agent.pipeline.stages import stage_options

        return stage_options(self.type, dict(self.model_extra or {}))


class SourceConfig(Section):
    id: str = Field(
        description="Name of the source; used in MQTT topics (letters, digits, _ -; not cmd)."
    )
    uri: str | int = Field(
        description="Camera index (0) or /dev/videoN, rtsp:// or http(s):// URL, video file path, "
        "or a folder of images."
    )
    kind: Literal["auto", "camera", "stream", "file", "folder"] = Field(
        "auto", description="What the uri is; 'auto' decides from its form."
    )
    fps_limit: float | None = Field(
        None,
        gt=0,
        description="Process at most this many frames per second; none = as fast as possible.",
    )
    on_eof: Literal["stop", "loop"] = Field(
        "stop", description="At the end of a video file or image folder: stop this source or loop."
    )
    reconnect_initial_delay_s: float = Field(
        1.0, gt=0, description="First wait before reopening a live source that failed."
    )
    reconnect_max_delay_s: float = Field(
        60.0, gt=0, description="Longest wait between reopen attempts (the delay doubles up to it)."
    )

    stages: list[StageConfig] = Field(
        default_factory=lambda: [StageConfig(type="counts")],
        description="This source's stages, in order, after the model: each result passes "
        "through them before it is published. Default: [{type: counts}].",
    )

    @field_validator("id")
    @classmethod
    def _id_is_topic_safe(cls, value: str) -> str:
        if not value or any(ch not in SOURCE_ID_CHARS for ch in value):
            raise ValueError(f"must be non-empty letters, digits, '_' or '-', but got {value!r}")
        if value in RESERVED_SOURCE_IDS:
            raise ValueError(f"{value!r} is reserved in MQTT topics; choose another name")
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> SourceConfig:
        if self.reconnect_max_delay_s < self.reconnect_initial_delay_s:
            raise ValueError("reconnect_max_delay_s must be >= reconnect_initial_delay_s")
        return self
