"""``edge-agent bench --apply``: write the fastest variant into an agent config."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from edge_agent.bench.rows import Row
from edge_agent.config import ConfigError, ConfigIssue, parse_config
from edge_agent.config.loader import path_for_config
from edge_agent.fsutil import write_atomic


def apply_to_config(config: Path, best: Row) -> None:
    """Write the recommended runtime, threads and bundle into a YAML config file.

    ``best.bundle`` is relative to the current directory; it is written so that the config,
    loaded from anywhere, names the same bundle. PyYAML does not keep comments: the previous
    file is kept beside it as ``.bak``."""
    original = config.read_text(encoding="utf-8")
    data = yaml.safe_load(original) or {}
    model = data.setdefault("model", {}) if isinstance(data, dict) else None
    if not isinstance(model, dict):
        where = "the top level" if not isinstance(data, dict) else "model"
        issue = ConfigIssue("", None, f"{where} must be a mapping to write the bundle into")
        raise ConfigError(config, [issue])
    current = model.get("bundle")
    was_absolute = isinstance(current, str) and Path(current).expanduser().is_absolute()
    bundle = path_for_config(config, best.bundle, keep_absolute=was_absolute)
    model.update(runtime=best.runtime, threads=best.threads, bundle=bundle)
    text = yaml.safe_dump(data, sort_keys=False)
    parse_config(text, config)  # never write a config the agent would refuse
    mode = stat.S_IMODE(config.stat().st_mode)  # a config holding a password stays private
    write_atomic(config.with_suffix(config.suffix + ".bak"), original.encode("utf-8"), mode)
    write_atomic(config, text.encode("utf-8"), mode)
