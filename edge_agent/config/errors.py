"""Config and manifest problems, located: ONE formatter turns pydantic's errors into messages
that name the path (and, for YAML, the line), shared by the agent config and the bundle manifest.

Given the model that was validated, an unknown key gets the nearest real key of the model that
refused it (``mqtt.keepalive: unknown key (did you mean 'keepalive_s'?)``), found by walking the
error's location through the model's fields, list items and discriminated unions: pydantic's
``extra_forbidden`` error carries no field names of its own.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

#: difflib's similarity cutoff for "did you mean": its default, 0.6, catches a typo or a missing
#: unit suffix in a short key (scroe -> score, keepalive -> keepalive_s) without wild guesses.
SUGGEST_CUTOFF = 0.6


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file, located by YAML path and line."""

    path: str
    line: int | None
    message: str
    #: The path as keys and indices, for locating it again inside a larger document.
    loc: tuple[Any, ...] = ()

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<root>'}: {self.message}"


class StageOptionsError(ValueError):
    """A stage's options refused: ``issues`` are located inside the stage's own keys, so the
    config's formatter can point at the line of ``lost_s`` rather than of the stage."""

    def __init__(self, stage_type: str, issues: list[ConfigIssue]) -> None:
        self.stage_type = stage_type
        self.issues = issues
        problems = "; ".join(f"{i.path or stage_type}: {i.message}" for i in issues)
        super().__init__(f"stage {stage_type!r}: {problems}")


class ConfigError(ValueError):
    """The config file cannot be used; ``issues`` lists every problem found."""

    def __init__(self, file: Path, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        super().__init__(f"{file}: " + "; ".join(str(i) for i in issues))


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a file spells for ``model``: each field's alias, else its name."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _unwrap(tp: Any, discriminator: str | None) -> tuple[Any, str | None]:
    """Strip ``Annotated`` (keeping a discriminator it names) and ``| None``."""
    while True:
        if get_origin(tp) is Annotated:
            tp, *meta = get_args(tp)
            for m in meta:
                if isinstance(m, FieldInfo) and isinstance(m.discriminator, str):
                    discriminator = m.discriminator
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:  # Optional: pydantic adds no location step for it
                tp = members[0]
                continue
        return tp, discriminator


def _tags(member: Any, discriminator: str) -> tuple[Any, ...]:
    field = member.model_fields.get(discriminator) if _is_model(member) else None
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return get_args(field.annotation)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow ``loc`` through ``model``: (the location as the file spells it, without
    discriminated-union tags, which pydantic inserts; the type the last step was taken in)."""
    tp: Any = model
    discriminator: str | None = None
    shown: list[Any] = []
    holder: Any = None
    for part in loc:
        tp, discriminator = _unwrap(tp, discriminator)
        holder = tp
        if get_origin(tp) in (Union, types.UnionType):  # pydantic names the member it tried
            members = get_args(tp)
            if discriminator is not None:
                tagged = [m for m in members if part in _tags(m, discriminator)]
                tp, discriminator = (tagged[0] if tagged else None), None
                continue  # a tag is not a key of the file
            named = [m for m in members if getattr(m, "__name__", None) == part]
            tp = named[0] if named else None
        elif _is_model(tp):
            fields = tp.model_fields
            field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
            tp = field.annotation if field else None
            found = field.discriminator if field else None
            discriminator = found if isinstance(found, str) else None
        elif get_origin(tp) in (list, tuple, set, frozenset) and isinstance(part, int):
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[min(part, len(args) - 1)] if args else None
        elif get_origin(tp) in (dict, Mapping):
            tp = get_args(tp)[1] if get_args(tp) else None
        else:
            tp = None
        shown.append(part)
    return tuple(shown), holder


def _did_you_mean(word: str, choices: list[str]) -> str | None:
    import difflib  # only a file that fails to load pays for it, not every agent start

    close = difflib.get_close_matches(word, choices, n=1, cutoff=SUGGEST_CUTOFF)
    return close[0] if close else None


def _unknown_key(key: Any, holder: Any) -> str:
    if not _is_model(holder):
        return "unknown key"
    known = _keys(holder)
    if not known:
        return "unknown key; this takes no keys"
    close = _did_you_mean(str(key), known)
    return (
        f"unknown key (did you mean {close!r}?)"
        if close
        else f"unknown key; expected one of {known}"
    )


def _message(err: Any, loc: tuple[Any, ...], holder: Any) -> tuple[tuple[Any, ...], str]:
    msg: str = err["msg"].removeprefix("Value error, ")
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        return loc, _unknown_key(loc[-1] if loc else "", holder)
    if kind == "missing":
        return loc, "required field is missing"
    if kind == "union_tag_not_found":  # the discriminator itself is absent
        key = str(ctx.get("discriminator", "")).strip("'")
        return ((*loc, key) if key.isidentifier() else loc), "required field is missing"
    if kind == "union_tag_invalid":  # a discriminated union: name the key, list the choices
        key = str(ctx.get("discriminator", "")).strip("'")
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        close = _did_you_mean(str(ctx.get("tag", "")), tags)
        hint = f" (did you mean {close!r}?)" if close else ""
        where = (*loc, key) if key.isidentifier() else loc
        return where, f"unknown {key} {ctx.get('tag')!r}{hint}; expected one of {tags}"
    if kind == "value_error" or isinstance(value, dict | list):
        return loc, msg
    if kind == "literal_error" and isinstance(value, str):
        close = _did_you_mean(value, re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        if close:
            return loc, f"{msg} (got {value!r}; did you mean {close!r}?)"
    return loc, f"{msg} (got {value!r})"


def validation_issues(
    exc: ValidationError,
    line_for: Callable[[tuple[Any, ...]], int | None] = lambda loc: None,
    model: type[BaseModel] | None = None,
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error: the dotted path, the line, a message a person reads.

    ``model`` is the class that was validated; with it an unknown key names the nearest known
    key of its own model (or lists them all), and discriminated-union tags (``decoder``'s
    ``type``) leave the path so it reads as the file does.
    """
    issues = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, StageOptionsError):  # each at its own key's line
            for issue in inner.issues:
                full = (*loc, *issue.loc)
                issues.append(ConfigIssue(dotted_path(full), line_for(full), issue.message, full))
            continue
        holder = None
        if model is not None:
            loc, holder = _walk(model, loc)
        loc, msg = _message(err, loc, holder)
        issues.append(ConfigIssue(dotted_path(loc), line_for(loc), msg, loc))
    return issues


def dotted_path(loc: tuple[Any, ...]) -> str:
    """``("sources", 0, "uri")`` as ``sources[0].uri``, the form every message uses."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
