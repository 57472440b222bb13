"""Option fields the ``zones`` and ``lines`` stages share: normalised points, names that are
MQTT topic levels and file names, and names unique within a stage."""

from __future__ import annotations

from typing import Any

from edge_agent.config.ids import SOURCE_ID_CHARS, check_id

#: [x, y], normalised: a plain list (YAML's, as stage options are validated strictly), checked
#: by ``check_point`` so the config reference shows it as a list of floats.
Point = list[float]


def check_point(value: Point) -> Point:
    if len(value) != 2 or not all(0.0 <= v <= 1.0 for v in value):
        raise ValueError(f"a point is [x, y], each from 0 to 1 (normalised), but got {value}")
    return value


def check_name(value: str) -> str:
    """A zone or line name: one clean topic level and file name (as source ids are)."""
    return check_id(value, SOURCE_ID_CHARS, ())


def unique_names(items: list[Any], what: str) -> list[Any]:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"{what} names must be unique, but {item.name!r} appears twice")
        seen.add(item.name)
    return items


def labels_of(key: str, items: list[Any]) -> list[tuple[tuple[Any, ...], str]]:
    """``labels_named`` for a stage whose ``key`` lists items with optional ``labels``: each
    label with its path, for the check against the model (config/labels.py)."""
    return [
        ((key, i, "labels", j), label)
        for i, item in enumerate(items)
        for j, label in enumerate(item.labels or ())
    ]
