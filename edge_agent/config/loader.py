"""Read an agent config from YAML: every value remembers its line, secrets come from the
environment, relative paths are relative to the file, and every problem is reported at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_agent.bundle.rawkey import is_raw_public_key
from edge_agent.config.agent import AgentConfig
from edge_agent.config.errors import ConfigError, ConfigIssue, validation_issues
from edge_agent.config.mqtt import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME
from edge_agent.config.yamltree import YamlRefused, read_yaml

#: A config is a few KiB; a larger file is something else named by mistake (a video, a log).
MAX_CONFIG_BYTES = 1024 * 1024


def _line_for(loc: tuple[Any, ...], lines: Mapping[tuple[Any, ...], int]) -> int | None:
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
        and uri.strip() != ""  # left for the model to refuse, not made the config's folder
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

    def fix_keys(holder: Any) -> None:
        keys = holder.get("public_keys") if isinstance(holder, dict) else None
        if isinstance(keys, list):  # file paths only: PEM text and the base64 form stay as is
            for i, key in enumerate(keys):
                if (
                    isinstance(key, str)
                    and key.strip()
                    and "-----BEGIN" not in key
                    and not is_raw_public_key(key)
                ):
                    path = Path(key).expanduser()
                    keys[i] = str(path if path.is_absolute() else base / path)

    fix(data, "state_dir")
    model = data.get("model")
    fix(model, "bundle")
    fix_keys(model)
    sources = data.get("sources")
    for source in sources if isinstance(sources, list) else []:  # else the model says what
        fix(source, "uri")
    mqtt = data.get("mqtt")
    fix(mqtt, "password_file")
    tls = mqtt.get("tls") if isinstance(mqtt, dict) else None
    for key in ("ca_file", "cert_file", "key_file"):
        fix(tls, key)
    if isinstance(mqtt, dict):
        fix(mqtt.get("outbox"), "path")
        fix_keys(mqtt.get("commands"))


@dataclass(frozen=True)
class LoadedConfig:
    """A valid config, the file it came from and the line of every value written in it, for
    checks that come later (``check_files``) and still point at the line to fix."""

    config: AgentConfig
    file: Path
    lines: Mapping[tuple[Any, ...], int]

    def line_of(self, *loc: Any) -> int | None:
        """The line of ``loc`` (e.g. ``"sources", 0, "uri"``), or of the nearest parent written."""
        return _line_for(loc, self.lines)


def _yaml_issue(exc: yaml.YAMLError, text: str) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: located by position
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return ConfigIssue("", line, f"invalid YAML: control character U+{code:04X} is not allowed")
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigIssue("", line, f"invalid YAML: {problem}")


def read_config_text(text: str, file: Path) -> LoadedConfig:
    """Parse YAML text into a LoadedConfig, raising ConfigError with every problem located."""
    try:
        data, lines, issues = read_yaml(text)
    except YamlRefused as exc:
        raise ConfigError(file, [ConfigIssue(exc.path, exc.line, exc.message)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(file, [_yaml_issue(exc, text)]) from exc
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        raise ConfigError(file, [ConfigIssue("", 1, f"expected a mapping at the top, got {kind}")])
    _apply_env(data)
    _resolve_paths(data, file.parent)
    try:
        config = AgentConfig.model_validate(data, strict=True)  # see Section
    except ValidationError as exc:
        found = validation_issues(exc, lambda loc: _line_for(loc, lines), AgentConfig)
        raise ConfigError(file, issues + found) from exc
    if issues:
        raise ConfigError(file, issues)
    return LoadedConfig(config, file, lines)


def parse_config(text: str, file: Path) -> AgentConfig:
    """Parse YAML text into an AgentConfig, raising ConfigError with every problem located."""
    return read_config_text(text, file).config


def read_config(file: str | Path) -> LoadedConfig:
    """Read and validate a YAML config file, keeping the line of every value."""
    path = Path(file)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # not all of /dev/zero, or a video named by mistake
    except OSError as exc:
        raise ConfigError(
            path, [ConfigIssue("", None, f"cannot read file: {exc.strerror}")]
        ) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        too_big = f"larger than {MAX_CONFIG_BYTES // 1024} KiB; is this the config file?"
        raise ConfigError(path, [ConfigIssue("", None, too_big)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start : exc.start + 1].hex()
        problem = f"not UTF-8 text: byte 0x{byte} at column {column}; save the file as UTF-8"
        raise ConfigError(path, [ConfigIssue("", line, problem)]) from exc
    return read_config_text(text, path)


def load_config(file: str | Path) -> AgentConfig:
    """Read and validate a YAML config file."""
    return read_config(file).config


def path_for_config(config: Path, target: str, keep_absolute: bool) -> str:
    """``target`` (relative to the current directory) as ``config`` must name it: the loader
    reads relative paths against the config file's folder (``_resolve_paths`` above).

    Relative when the target is in that folder or beside it, so a config and its bundles can
    move together; absolute when the config already named an absolute path, when the target is
    further away (``../../..`` is easy to misread), or when a relative path would not lead
    back to it (a symlinked config folder followed by ``..``)."""
    absolute = os.path.abspath(target)
    if keep_absolute:
        return absolute
    folder = Path(os.path.abspath(config)).parent
    try:
        relative = Path(os.path.relpath(absolute, folder))
    except ValueError:  # on another drive (Windows)
        return absolute
    near = relative.parts[:2] != ("..", "..")
    if near and (folder / relative).resolve() == Path(absolute).resolve():
        return relative.as_posix()
    return absolute
