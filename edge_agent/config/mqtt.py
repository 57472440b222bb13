"""``mqtt``: the broker connection."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_agent.config.base import ConfigPath, Section
from edge_agent.config.checks import checked_topic_prefix
from edge_agent.config.mqtt_features import CommandsConfig, HomeAssistantConfig
from edge_agent.config.outbox import OutboxConfig

#: Environment variables that override secrets, so they need not sit in the YAML file.
ENV_MQTT_USERNAME = "EDGESIGHT_MQTT_USERNAME"
ENV_MQTT_PASSWORD = "EDGESIGHT_MQTT_PASSWORD"

#: An hour: a longer wait leaves a device offline long after its broker came back.
MAX_RECONNECT_DELAY_S = 3600.0
#: The longest session expiry MQTT 5 can express (0xFFFFFFFF means "never expires").
MAX_SESSION_EXPIRY_S = 0xFFFFFFFE
#: MQTT caps a password at 65,535 bytes (a two-byte length); a bigger file is the wrong file.
MAX_PASSWORD_BYTES = 65_535
#: Results are about 1 KB each: a million is a gigabyte, more memory than the devices we target.
MAX_QUEUED_MESSAGES = 1_000_000


def read_password_file(path: Path) -> str:
    """The password held in ``path``: its one line, without the final newline that editors and
    ``echo`` add. Raises ValueError saying what is wrong with the file.

    Checked before opening, so a FIFO or a device named by mistake cannot block the loader.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise ValueError(f"expected a file holding the password, but {path} is not a regular file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PASSWORD_BYTES + 3)  # + a final CR LF, + one byte to see "too long"
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    for end in (b"\r\n", b"\n"):
        if raw.endswith(end):
            raw = raw[: -len(end)]
            break
    if not raw:
        raise ValueError(f"{path} is empty; expected the password on one line")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(
            f"{path} is longer than an MQTT password can be ({MAX_PASSWORD_BYTES:,} bytes)"
        )
    if b"\n" in raw or b"\r" in raw:
        lines = raw.replace(b"\r\n", b"\n").count(b"\n") + 1
        raise ValueError(f"{path} holds {lines} lines; expected the password alone on one line")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start + 1})") from exc


class TlsConfig(Section):
    ca_file: ConfigPath | None = Field(
        None,
        description="CA certificate file to verify the broker; check-config checks that it "
        "can be read.",
    )
    cert_file: ConfigPath | None = Field(
        None, description="Client certificate file (mutual TLS); checked like ca_file."
    )
    key_file: ConfigPath | None = Field(
        None, description="Client private key file (mutual TLS); checked like ca_file."
    )
    insecure: bool = Field(False, description="Skip the broker host name check (testing only).")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Section):
    host: str = Field(
        "localhost",
        description="Broker host name or address; not empty, not a URL (no mqtt://).",
    )
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (1 to 65535).")
    client_id: str | None = Field(
        None, description="MQTT client id; default edgesight-<device_id>."
    )
    username: str | None = Field(None, description=f"User name; ${ENV_MQTT_USERNAME} overrides.")
    password: str | None = Field(
        None, description=f"Password; ${ENV_MQTT_PASSWORD} overrides; needs a username."
    )
    password_file: ConfigPath | None = Field(
        None,
        description="Absolute path of a file holding the password on one line (a final newline "
        "is dropped), read when the config is loaded; not together with password or "
        f"${ENV_MQTT_PASSWORD}.",
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; absent = plain TCP.")
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT version: 5 (reason codes in words, session expiry, request/response "
        "commands) or 3.1.1 for a broker without 5.",
    )
    session_expiry_s: int = Field(
        86400,
        ge=0,
        le=MAX_SESSION_EXPIRY_S,
        description="How long the broker keeps this device's session (subscriptions, queued "
        "commands) while it is away, MQTT 5 (0 to 4294967294 s; 0 = a clean session). On "
        "3.1.1 the session is kept as long as the broker's own settings allow.",
    )
    topic_prefix: str = Field("edgesight", description="First level of every topic.")
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig,
        description="The disk queue results, counts and events wait in while the broker is "
        "away (docs/outbox.md).",
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, description="Commands the device answers."
    )
    home_assistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant MQTT discovery."
    )
    stats_interval_s: float = Field(
        60.0,
        ge=1.0,
        le=86400.0,
        description="How often the stats message is published (1 to 86400 s).",
    )
    heartbeat_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="How often the retained status is sent again with a fresh ts (1 to 3600 "
        "s): a consumer that sees no newer ts for a few of these knows an 'online' is stale.",
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="MQTT keep-alive interval (5 to 3600 s)."
    )
    reconnect_min_delay_s: float = Field(
        1.0,
        gt=0,
        le=MAX_RECONNECT_DELAY_S,
        description=f"First reconnect wait (above 0, at most {MAX_RECONNECT_DELAY_S:g} s).",
    )
    reconnect_max_delay_s: float = Field(
        2.0,
        gt=0,
        le=MAX_RECONNECT_DELAY_S,
        description=f"Longest reconnect wait (at most {MAX_RECONNECT_DELAY_S:g} s, not below "
        "reconnect_min_delay_s). Each wait doubles up to this, less a random part of up to "
        "half (so a fleet does not reconnect in step); the default 2 s reconnects within 2 s of "
        "the broker coming back.",
    )
    max_queued_messages: int = Field(
        10000,
        ge=1,
        le=MAX_QUEUED_MESSAGES,
        description="Messages held in memory while the broker is away; more are dropped "
        f"(1 to {MAX_QUEUED_MESSAGES:,}).",
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as the number 5.
        if isinstance(value, int) and not isinstance(value, bool) and value == 5:
            return "5"
        return value

    @field_validator("host")
    @classmethod
    def _host_is_a_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: give the broker's host name or address")
        if "://" in value:
            raise ValueError(
                f"expected a host name or address, not a URL: {value!r} (the port is mqtt.port, "
                "TLS is mqtt.tls)"
            )
        if any(ch.isspace() for ch in value):
            raise ValueError(f"a host name holds no spaces: {value!r}")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        return checked_topic_prefix(value)

    @field_validator("password_file")
    @classmethod
    def _password_file_readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if not value.expanduser().is_absolute():
            # A config file's relative paths are made relative to it (loader._resolve_paths);
            # a relative one here came from code and would depend on the working folder.
            raise ValueError(f"expected an absolute path, got {str(value)!r}")
        value = value.expanduser()
        if info.data.get("password") is not None:
            raise ValueError(
                f"give the password once: mqtt.password (or ${ENV_MQTT_PASSWORD}) or "
                "mqtt.password_file, not both"
            )
        read_password_file(value)  # refuse a bad file here, located at this key
        return value

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if self.password_file is not None:
            # Frozen model: filled in once, during validation, so the client reads one field.
            # The file was checked above; reading it again here cannot fail but for a race.
            object.__setattr__(self, "password", read_password_file(self.password_file))
        if self.password is not None and not self.username:
            given = "password_file" if self.password_file is not None else "password"
            raise ValueError(
                f"mqtt.{given} is set but mqtt.username is not (nor ${ENV_MQTT_USERNAME}); "
                "a password is only sent with a user name"
            )
        return self

    @model_validator(mode="after")
    def _delays_ordered(self) -> MqttConfig:
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s must be >= reconnect_min_delay_s")
        return self
