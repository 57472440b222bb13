"""Agent configuration: pydantic models loaded from YAML, errors mapped back to YAML lines.

Every field has a description (``edge-agent check-config`` and docs/config.md are built on them)
and unknown keys are refused, because a misspelt key silently ignored is a night of debugging on
a device nobody can reach.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.publish.topics import RESERVED_DEVICE_IDS, RESERVED_SOURCE_IDS, topic_level
from edge_agent.rawkey import is_raw_public_key

#: Environment variables that override secrets, so they need not sit in the YAML file.
ENV_MQTT_USERNAME = "EDGESIGHT_MQTT_USERNAME"
ENV_MQTT_PASSWORD = "EDGESIGHT_MQTT_PASSWORD"

SOURCE_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
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


class ModelConfig(_Model):
    bundle: Path = Field(description="Model bundle directory (holding manifest.json).")
    runtime: Literal["auto", "onnx", "tflite"] = Field(
        "auto",
        description="Inference runtime: onnx (onnxruntime), tflite (LiteRT), or auto: the one "
        "that runs the bundle's model file format.",
    )
    threads: int = Field(2, ge=1, le=64, description="Intra-op threads for the runtime.")
    providers: list[str] | None = Field(
        None,
        description="onnx: execution providers in order (e.g. [CUDAExecutionProvider]); "
        "default: TensorRT, then CUDA, then CPU, whichever onnxruntime offers.",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnx: graph optimization level."
    )
    edgetpu: bool = Field(False, description="tflite: run on a Coral Edge TPU (libedgetpu).")
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Override the bundle's score threshold (its per-class thresholds still win).",
    )
    public_keys: list[str] = Field(
        default_factory=list,
        description="ed25519 public keys allowed to sign bundles: PEM file paths or the one-line "
        "base64 form that edge-trainer keygen prints. When set, a bundle must carry a "
        "manifest.sig from one of them and hold no file its manifest does not list.",
    )

    @field_validator("public_keys")
    @classmethod
    def _keys_load(cls, value: list[str]) -> list[str]:
        from edge_agent.signing import load_public_key  # cryptography only when keys are set

        problems = []
        for i, key in enumerate(value):
            try:
                load_public_key(key)
            except ValueError as exc:  # KeyFormatError names the file and what was expected
                problems.append(f"[{i}] {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def runtime_for(self, model_format: str) -> str:
        """The runtime to use for a bundle whose model file has this format."""
        return model_format if self.runtime == "auto" else self.runtime

    def runtime_options(self, runtime: str) -> dict[str, object]:
        """Keyword arguments for that runtime."""
        if runtime == "onnx":
            return {"providers": self.providers, "graph_optimization": self.graph_optimization}
        return {"edgetpu": self.edgetpu}


class TlsConfig(_Model):
    ca_file: Path | None = Field(None, description="CA certificate file to verify the broker.")
    cert_file: Path | None = Field(None, description="Client certificate file (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key file (mutual TLS).")
    insecure: bool = Field(False, description="Skip the broker host name check (testing only).")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(_Model):
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


class AgentConfig(_Model):
    device_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        description="Device name used in topics (not fleet); default the host name.",
    )
    model: ModelConfig = Field(description="The model bundle and how to run it.")
    sources: list[SourceConfig] = Field(min_length=1, description="Frame sources to process.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Broker connection.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )

    @field_validator("device_id")
    @classmethod
    def _device_id_not_reserved(cls, value: str) -> str:
        if topic_level(value) in RESERVED_DEVICE_IDS:
            raise ValueError(f"{value!r} is reserved in MQTT topics; choose another name")
        return value

    @model_validator(mode="after")
    def _unique_source_ids(self) -> AgentConfig:
        ids = [s.id for s in self.sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"source ids must be unique, but {dupes} appear more than once")
        return self


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file, located by YAML path and line."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigError(ValueError):
    """The config file cannot be used; ``issues`` lists every problem found."""

    def __init__(self, file: Path, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        super().__init__(f"{file}: " + "; ".join(str(i) for i in issues))


def _to_python(node: yaml.Node, lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> Any:
    """Build plain Python data from a YAML node, remembering the line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            out[key] = _to_python(value_node, lines, (*path, key))
            lines[(*path, key)] = key_node.start_mark.line + 1  # the key's line, not the value's
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, lines, (*path, i)) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _apply_env(data: dict[str, Any]) -> None:
    """Secrets from the environment win over the file."""
    for var, key in ((ENV_MQTT_USERNAME, "username"), (ENV_MQTT_PASSWORD, "password")):
        if os.environ.get(var):
            mqtt = data.setdefault("mqtt", {})
            if isinstance(mqtt, dict):
                mqtt[key] = os.environ[var]


def _is_local_path(uri: Any) -> bool:
    return (
        isinstance(uri, str)
        and "://" not in uri
        and not uri.startswith("/dev/")
        and not uri.isdigit()
    )


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to that file, wherever the agent starts."""

    def fix(holder: Any, key: str) -> None:
        if isinstance(holder, dict) and _is_local_path(holder.get(key)):
            path = Path(holder[key]).expanduser()
            if not path.is_absolute():
                holder[key] = str(base / path)

    model = data.get("model")
    fix(model, "bundle")
    keys = model.get("public_keys") if isinstance(model, dict) else None
    if isinstance(keys, list):  # file paths only: PEM text and the base64 form stay as they are
        for i, key in enumerate(keys):
            if isinstance(key, str) and "-----BEGIN" not in key and not is_raw_public_key(key):
                path = Path(key).expanduser()
                keys[i] = str(path if path.is_absolute() else base / path)
    for source in data.get("sources") or []:
        fix(source, "uri")
    mqtt = data.get("mqtt")
    tls = mqtt.get("tls") if isinstance(mqtt, dict) else None
    for key in ("ca_file", "cert_file", "key_file"):
        fix(tls, key)


def parse_config(text: str, file: Path) -> AgentConfig:
    """Parse YAML text into an AgentConfig, raising ConfigError with every problem located."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, [ConfigIssue("", line, f"invalid YAML: {problem}")]) from exc
    lines: dict[tuple[Any, ...], int] = {}
    data = _to_python(node, lines, ()) if node is not None else None
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        raise ConfigError(file, [ConfigIssue("", 1, f"expected a mapping at the top, got {kind}")])
    _apply_env(data)
    _resolve_paths(data, file.parent)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc)
            path = path.replace(".[", "[")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] != "value_error" and not isinstance(err.get("input"), dict | list):
                msg = f"{msg} (got {err.get('input')!r})"
            issues.append(ConfigIssue(path, _line_for(loc, lines), msg))
        raise ConfigError(file, issues) from exc


def load_config(file: str | Path) -> AgentConfig:
    """Read and validate a YAML config file."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            path, [ConfigIssue("", None, f"cannot read file: {exc.strerror}")]
        ) from exc
    return parse_config(text, path)
