"""The whole agent config: one device, one model, its sources and the broker."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import ConfigPath, Section
from edge_agent.config.health import HealthConfig
from edge_agent.config.ids import DEVICE_ID_CHARS, check_id
from edge_agent.config.model import ModelConfig
from edge_agent.config.mqtt import MqttConfig
from edge_agent.config.sources import SourceConfig
from edge_agent.config.updates import UpdatesConfig
from edge_agent.publish.topics import RESERVED_DEVICE_IDS

#: systemd sets this for a unit with ``StateDirectory=`` (/var/lib/edgesight in ours).
ENV_STATE_DIRECTORY = "STATE_DIRECTORY"


def default_state_dir() -> Path:
    """systemd's StateDirectory when the agent runs as the service, else the user's
    XDG state folder (~/.local/state/edgesight), so a run from a shell never needs root."""
    given = os.environ.get(ENV_STATE_DIRECTORY, "").split(":")[0]
    if given:
        return Path(given)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "edgesight"


class AgentConfig(Section):
    device_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        validate_default=True,
        description="Device name, one MQTT topic level as written: letters, digits, '_', '-' "
        "and '.'; not fleet. Any other character is refused, not replaced. Default: the host "
        "name, checked by the same rule.",
    )
    model: ModelConfig = Field(description="The model bundle and how to run it.")
    sources: list[SourceConfig] = Field(min_length=1, description="Frame sources to process.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Broker connection.")
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="When status says degraded."
    )
    updates: UpdatesConfig = Field(
        default_factory=UpdatesConfig,
        description="Remote model updates: commands, the fleet group, download limits, the "
        "trial and probation; see docs/updates.md.",
    )
    state_dir: ConfigPath = Field(
        default_factory=default_state_dir,
        description="Folder for what must survive a restart: line tallies, snapshots, "
        "camera-trap exports, one sub-folder per source. Default: $STATE_DIRECTORY (set by "
        "systemd's StateDirectory=, /var/lib/edgesight/ for our unit), else "
        "$XDG_STATE_HOME/edgesight or ~/.local/state/edgesight. Created when first needed.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines: text (with syslog priorities and no time when stderr is the "
        "journal) or json (one object a line: ts, level, logger, message, exception).",
    )

    @field_validator("device_id")
    @classmethod
    def _device_id_is_topic_safe(cls, value: str) -> str:
        try:
            return check_id(value, DEVICE_ID_CHARS, RESERVED_DEVICE_IDS)
        except ValueError as exc:
            if value == socket.gethostname():
                raise ValueError(f"{exc} (the host name, the default: set device_id)") from None
            raise

    @model_validator(mode="after")
    def _unique_source_ids(self) -> AgentConfig:
        ids = [s.id for s in self.sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"source ids must be unique, but {dupes} appear more than once")
        return self

    @model_validator(mode="after")
    def _own_export_folders(self) -> AgentConfig:
        """Two sources writing camera-trap exports to one folder would overwrite each other's
        files; a relative export_dir is inside each source's own state folder, so only
        absolute ones can meet."""
        seen: dict[Path, str] = {}
        for source in self.sources:
            for stage in source.stages:
                folder = getattr(stage.options(), "export_dir", None)
                if not folder or not Path(str(folder)).is_absolute():
                    continue
                resolved = Path(os.path.normpath(Path(str(folder)).expanduser()))
                if resolved in seen and seen[resolved] != source.id:
                    raise ValueError(
                        f"sources {seen[resolved]!r} and {source.id!r} both write exports to "
                        f"{resolved}; give each its own export_dir (or leave it relative)"
                    )
                seen[resolved] = source.id
        return self
