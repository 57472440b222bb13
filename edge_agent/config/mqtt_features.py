"""``mqtt.commands`` and ``mqtt.home_assistant``: what the device answers and announces."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge_agent.config.base import Section
from edge_agent.config.checks import checked_public_keys, checked_topic_prefix

#: Largest command payload that may be set, bytes: commands are small JSON objects.
MAX_COMMAND_BYTES = 1_048_576


class CommandsConfig(Section):
    enabled: bool = Field(
        True,
        description="Answer commands on <prefix>/<device>/cmd/<name> (ping, snapshot, "
        "set_threshold, reload_config, get_config, get_stats). Whoever may publish there can "
        "use them: restrict it with broker ACLs (docs/mqtt-security.md) or public_keys.",
    )
    public_keys: list[str] = Field(
        default_factory=list,
        description="ed25519 public keys (PEM file paths or the base64 form edge-trainer "
        "keygen prints) allowed to sign commands. When set, unsigned commands are refused and "
        "signed ones are checked for device, sequence and expiry (docs/commands.md).",
    )
    max_bytes: int = Field(
        16384,
        ge=64,
        le=MAX_COMMAND_BYTES,
        description=f"Largest command payload accepted, bytes (64 to {MAX_COMMAND_BYTES:,}).",
    )

    @field_validator("public_keys")
    @classmethod
    def _keys_load(cls, value: list[str]) -> list[str]:
        return checked_public_keys(value)


class HomeAssistantConfig(Section):
    discovery: bool = Field(
        True,
        description="Publish Home Assistant MQTT discovery (one device-based message: counts, "
        "zones, lines, slots, snapshot image, events, model, fps, outbox depth).",
    )
    prefix: str = Field(
        "homeassistant",
        description="Home Assistant's discovery prefix (its MQTT integration setting).",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        return checked_topic_prefix(value)
