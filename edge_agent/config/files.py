"""The files a config names, checked before anything runs: each one missing or unreadable is a
problem at the line that names it, not a failure minutes later in a thread.

Checked here: the bundle, the video file or image folder of a file/folder source, the TLS
files. Public key files are read while the config is validated (``ModelConfig.public_keys``).
Cameras and streams are not: they come and go, and the agent retries them while it runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal

from edge_agent.config.errors import ConfigIssue, dotted_path
from edge_agent.config.loader import LoadedConfig
from edge_agent.config.sources import is_camera, is_stream

Want = Literal["file", "folder", "file or folder"]


def path_problem(path: Path, want: Want) -> str | None:
    """Why ``path`` cannot be read as ``want``, or None. Opens, reads nothing: a FIFO or a
    device is refused before anything could block on it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path} does not exist"
    except ValueError:  # a NUL character: no file can have that name
        return f"{str(path)!r} is not a valid path (it holds a NUL character)"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    is_dir = stat.S_ISDIR(mode)
    if want == "folder" and not is_dir:
        return f"expected a folder, but {path} is a file"
    if want == "file" and is_dir:
        return f"expected a file, but {path} is a folder"
    if not is_dir and not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    try:
        if is_dir:
            with os.scandir(path):
                pass
        else:
            with path.open("rb"):
                pass
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    return None


def _source_want(kind: str, uri: str | int) -> Want | None:
    """What a source's uri must name on disk (decided as edge_agent.sources.resolve_kind)."""
    if kind == "file":
        return "file"
    if kind == "folder":
        return "folder"
    if kind == "auto" and not is_camera(uri) and not is_stream(uri):
        return "file or folder"
    return None


def check_files(loaded: LoadedConfig) -> list[ConfigIssue]:
    """One issue per file or folder the config names that is missing or cannot be read."""
    cfg = loaded.config
    wanted: list[tuple[tuple[Any, ...], Path, Want]] = [
        (("model", "bundle"), cfg.model.bundle, "file or folder")
    ]
    for i, source in enumerate(cfg.sources):
        want = _source_want(source.kind, source.uri)
        if want is not None and isinstance(source.uri, str):
            wanted.append((("sources", i, "uri"), Path(source.uri).expanduser(), want))
    tls = cfg.mqtt.tls
    if tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(tls, key)
            if path is not None:
                wanted.append((("mqtt", "tls", key), path, "file"))
    issues = []
    for loc, path, want in wanted:
        problem = path_problem(path, want)
        if problem:
            issues.append(ConfigIssue(dotted_path(loc), loaded.line_of(*loc), problem))
    return issues
