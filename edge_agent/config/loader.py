"""Read an agent config from YAML: every value remembers its line, secrets come from the
environment, relative paths are relative to the file, and every problem is reported at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_agent.bundle.rawkey import is_raw_public_key
from edge_agent.config.agent import AgentConfig
from edge_agent.config.errors import ConfigError, ConfigIssue, validation_issues
from edge_agent.config.mqtt import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME


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
        raise ConfigError(
            file, validation_issues(exc, lambda loc: _line_for(loc, lines), AgentConfig)
        ) from exc


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
