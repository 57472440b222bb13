"""The ``zones`` stage's options: the zones, each a polygon checked to enclose an area with
edges that do not cross, and how tracks are counted in it (zones.py counts them)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.analytics.option_fields import (
    Point,
    check_name,
    check_point,
    labels_of,
    unique_names,
)
from edge_agent.geometry import Anchor

#: Vertices a zone may have: enough for any room's outline, few enough to test every box fast.
MAX_POLYGON_POINTS = 64
#: Area (fraction of the frame) below which a polygon is refused as degenerate: 1e-6 of a
#: 640x480 frame is a third of a pixel, where nothing can stand.
MIN_ZONE_AREA = 1e-6


def _polygon_problem(points: np.ndarray) -> str | None:
    """Why a polygon cannot be a zone (no area, edges that cross), or None."""
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))
    if area < MIN_ZONE_AREA:
        return f"encloses no area ({area:.3g} of the frame); give 3 or more points not on a line"
    a, b = points, np.roll(points, -1, axis=0)  # edge i runs a[i] -> b[i]

    def orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (
            r[..., 0] - p[..., 0]
        )

    ai, bi, aj, bj = a[:, None], b[:, None], a[None, :], b[None, :]
    cross = (orient(ai, bi, aj) * orient(ai, bi, bj) < 0) & (
        orient(aj, bj, ai) * orient(aj, bj, bi) < 0
    )
    i, j = np.nonzero(np.triu(cross, 1))
    if len(i):
        return (
            f"edges {int(i[0])}-{int(i[0]) + 1} and {int(j[0])}-{(int(j[0]) + 1) % len(points)} "
            "cross; list the points in order around the zone"
        )
    return None


class Zone(BaseModel):
    """One zone: a polygon and how tracks are counted in it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(description="Zone name, used as a topic level: letters, digits, _ and -.")
    polygon: list[Point] = Field(
        description="Corners [[x, y], ...] in order around the zone, normalised (0..1, x right, "
        f"y down); 3 to {MAX_POLYGON_POINTS}, enclosing an area, edges not crossing.",
    )
    anchor: Anchor = Field(
        "bottom_center",
        description="The point of a box that must be inside: bottom_center (where a person or "
        "car stands), center, top_center, center_left, ... (the nine box points).",
    )
    inertia: int = Field(
        3,
        ge=1,
        le=1000,
        description="Consecutive frames a track must be inside before it enters, and outside "
        "before it leaves (1: at once).",
    )
    labels: list[str] | None = Field(
        None, min_length=1, description="Labels counted in this zone (default: every label)."
    )
    loiter_s: float | None = Field(
        None,
        gt=0,
        description="Seconds inside after which one loitering event is published per visit "
        "(default: none).",
    )

    _check_name = field_validator("name")(check_name)

    @field_validator("polygon")
    @classmethod
    def _usable_polygon(cls, value: list[Point]) -> list[Point]:
        for point in value:
            check_point(point)
        if not 3 <= len(value) <= MAX_POLYGON_POINTS:
            raise ValueError(
                f"polygon needs 3 to {MAX_POLYGON_POINTS} points [x, y], but got {len(value)}"
            )
        problem = _polygon_problem(np.asarray(value, np.float64))
        if problem:
            raise ValueError(f"polygon {problem}")
        return value


class ZonesOptions(BaseModel):
    """Counts confirmed tracks in polygons: current count, entries, exits, dwell time and
    loitering, per zone and label (needs a ``track`` stage before it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: list[Zone] = Field(min_length=1, description="The zones, each with its own name.")
    lost_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Seconds (capture time) a track may go unseen (occluded, missed) and keep "
        "its place in a zone, at least the track stage's lost_s; after that it exits at the "
        "time it was last seen.",
    )

    @field_validator("zones")
    @classmethod
    def _unique(cls, value: list[Zone]) -> list[Zone]:
        return unique_names(value, "zone")

    def labels_named(self) -> list[tuple[tuple[Any, ...], str]]:
        return labels_of("zones", self.zones)
