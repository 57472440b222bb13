"""Config and manifest problems, located: ONE formatter turns pydantic's errors into messages
that name the path (and, for YAML, the line), shared by the agent config and the bundle manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError


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


def validation_issues(
    exc: ValidationError, line_for: Callable[[tuple[Any, ...]], int | None] = lambda loc: None
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error: the dotted path, the line, a message a person reads."""
    issues = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc)
        path = path.replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] != "value_error" and not isinstance(err.get("input"), dict | list):
            msg = f"{msg} (got {err.get('input')!r})"
        issues.append(ConfigIssue(path, line_for(loc), msg))
    return issues
