"""The ``lines`` stage's options: the counting lines, each a segment with its "in" side, and
how crossings are confirmed (lines.py counts them)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edge_agent.analytics.option_fields import (
    Point,
    check_name,
    check_point,
    labels_of,
    unique_names,
)
from edge_agent.analytics.tallies import PERIODS, Period
from edge_agent.geometry import Anchor

#: Shortest line accepted (normalised): shorter, "which side" is decided by pixel noise.
MIN_LINE_LENGTH = 0.01


class Line(BaseModel):
    """One counting line: a segment, which side is "in", and how crossings are confirmed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(description="Line name, used as a topic level: letters, digits, _ and -.")
    start: Point = Field(description="One end [x, y], normalised (0..1, x right, y down).")
    end: Point = Field(description="The other end [x, y]; at least 0.01 away from start.")
    in_side: Literal["left", "right"] = Field(
        description="The side that is 'in', as seen on screen looking from start towards end."
    )
    anchor: Anchor = Field(
        "bottom_center",
        description="The point of a box that crosses: bottom_center (feet, wheels on the "
        "ground), center, top_center, ... (the nine box points).",
    )
    min_frames: int = Field(
        2, ge=1, le=100, description="Consecutive frames beyond the band on the new side."
    )
    hysteresis: float = Field(
        0.02,
        ge=0.0,
        le=0.25,
        description="Half-width of the band around the line (normalised distance) a track "
        "must get past on the new side before a crossing counts.",
    )
    labels: list[str] | None = Field(
        None, min_length=1, description="Labels counted on this line (default: every label)."
    )
    periods: list[Period] = Field(
        list(PERIODS), description="Tallies kept beside the totals: hour, day (local time)."
    )

    _check_name = field_validator("name")(check_name)
    _check_start = field_validator("start")(check_point)

    @field_validator("end")
    @classmethod
    def _long_enough(cls, value: Point, info: ValidationInfo) -> Point:
        check_point(value)
        start = info.data.get("start")
        if start is not None:
            length = float(np.hypot(value[0] - start[0], value[1] - start[1]))
            if length < MIN_LINE_LENGTH:
                raise ValueError(
                    f"end must be at least {MIN_LINE_LENGTH} from start, but the line is "
                    f"{length:.3g} long"
                )
        return value

    @field_validator("periods")
    @classmethod
    def _unique_periods(cls, value: list[Period]) -> list[Period]:
        if len(set(value)) != len(value):
            raise ValueError(f"each period may appear once, but got {value}")
        return value


class LinesOptions(BaseModel):
    """Counts confirmed tracks crossing lines, in and out, per label, with hourly and daily
    tallies kept across restarts (needs a ``track`` stage before it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[Line] = Field(min_length=1, description="The lines, each with its own name.")
    lost_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds (capture time) a track may go unseen and keep its line state (its "
        "side, the crossings it counted); at least the track stage's lost_s, so a track "
        "that comes back is never counted twice.",
    )

    @field_validator("lines")
    @classmethod
    def _unique(cls, value: list[Line]) -> list[Line]:
        return unique_names(value, "line")

    def labels_named(self) -> list[tuple[tuple[Any, ...], str]]:
        return labels_of("lines", self.lines)
