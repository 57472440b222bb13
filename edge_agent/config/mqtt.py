"""``mqtt``: the broker connection."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import Section

#: Environment variables that override secrets, so they need not sit in the YAML file.
ENV_MQTT_USERNAME = "EDGESIGHT_MQTT_USERNAME"
ENV_MQTT_PASSWORD = "EDGESIGHT_MQTT_PASSWORD"


class TlsConfig(Section):
    ca_file: Path | None = Field(None, description="CA certificate file to verify the broker.")
    cert_file: Path | None = Field(None, description="Client certificate file (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key file (mutual TLS).")
    insecure: bool = Field(False, description="Skip the broker host name check (testing only).")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Section):
    host: str = Field("localhost", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str | None = Field(
        None, description="MQTT client id; default edgesight-<device_id>."
    )
    username: str | None = Field(None, description=f"User name; ${ENV_MQTT_USERNAME} overrides.")
    password: str | None = Field(None, description=f"Password; ${ENV_MQTT_PASSWORD} overrides.")
    tls: TlsConfig | None = Field(None, description="TLS settings; absent = plain TCP.")
    topic_prefix: str = Field("edgesight", description="First level of every topic.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    reconnect_min_delay_s: float = Field(1.0, gt=0, description="First reconnect wait.")
    reconnect_max_delay_s: float = Field(120.0, gt=0, description="Longest reconnect wait.")
    max_queued_messages: int = Field(
        10000,
        ge=1,
        description="Messages held in memory while the broker is away; more are dropped.",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        if not value or any(ch in value for ch in "#+") or value.startswith("/"):
            raise ValueError(
                f"must be a non-empty topic without '#', '+' or a leading '/': {value!r}"
            )
        return value.rstrip("/")
