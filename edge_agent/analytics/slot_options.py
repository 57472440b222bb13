"""The ``slots`` stage's options: each shelf slot's polygon, item, capacity, low mark, anchor
and debounce, and the ok / low / out state a count means (slots.py counts them)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.analytics.option_fields import unique_names
from edge_agent.config.ids import SOURCE_ID_CHARS, check_id
from edge_agent.geometry import Anchor

#: A new count must hold this long (capture time) before it counts: a hand reaching in front
#: of a shelf hides items for one or two seconds.
DEFAULT_DEBOUNCE_S = 5.0
#: Longer than an hour is a unit mistake (milliseconds), and would hide a real empty shelf.
MAX_DEBOUNCE_S = 3600.0
#: Low at a quarter full or less (1 of 4, 2 of 8), out at none.
DEFAULT_LOW_AT = 0.25
MAX_CAPACITY = 10_000
#: Each slot costs per-frame work; a shelf camera sees a few dozen at most.
MAX_SLOTS = 64
#: A polygon smaller than this fraction of the frame (2 px at 1080p) is a typing mistake.
MIN_POLYGON_AREA = 1e-6

State = Literal["ok", "low", "out"]


class SlotSpec(BaseModel):
    """One slot: a polygon of the shelf that holds ``capacity`` items of ``label`` when full."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    name: str = Field(
        description="Slot name, unique in the stage: one MQTT topic level (<src>/slot/<name>) "
        "and a file name: letters, digits, '_' and '-'."
    )
    polygon: list[list[float]] = Field(
        description="The slot's outline: at least 3 [x, y] points, normalised to [0, 1] "
        "(x right, y down), enclosing a non-zero area."
    )
    label: str = Field(description="The item the slot holds: one of the model's labels.")
    capacity: int = Field(ge=1, le=MAX_CAPACITY, description="Items in the slot when full.")
    low_at: float = Field(
        DEFAULT_LOW_AT,
        ge=0.0,
        lt=1.0,
        description="Fill ratio (count / capacity) at or below which the slot is low; 0: never "
        "low, only out. Out of stock is always 0 items.",
    )
    anchor: Anchor = Field(
        "center", description="The point of each box that must be inside the polygon."
    )
    debounce_s: float = Field(
        DEFAULT_DEBOUNCE_S,
        ge=0.0,
        le=MAX_DEBOUNCE_S,
        description="Seconds (capture time) a new count must hold before the slot's count, "
        "state and events change; a shorter dip (a hand in front of the shelf) changes nothing.",
    )

    @field_validator("name")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return check_id(value, SOURCE_ID_CHARS, ())

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) < 3:
            raise ValueError(f"polygon must have at least 3 points, but got {len(value)}")
        for k, point in enumerate(value):
            if len(point) != 2 or not all(0.0 <= v <= 1.0 for v in point):
                raise ValueError(
                    f"point {k} must be [x, y] with both in [0, 1] (normalised), but got {point}"
                )
        xy = np.asarray(value, np.float64)
        area = 0.5 * abs(
            np.dot(xy[:, 0], np.roll(xy[:, 1], -1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], -1))
        )
        if area < MIN_POLYGON_AREA:
            raise ValueError(
                f"polygon must enclose an area of at least {MIN_POLYGON_AREA} of the frame, "
                f"but got {area:.3g} (points on one line?)"
            )
        return value

    def low_count(self) -> int:
        """The largest count that is low: ``low_at * capacity`` rounded down."""
        return math.floor(self.low_at * self.capacity + 1e-9)  # 0.25 * 4 is 1, not 0.999...

    def state_of(self, count: int) -> State:
        if count == 0:
            return "out"
        return "low" if count <= self.low_count() else "ok"


class SlotsOptions(BaseModel):
    """Shelf slots: each counts the boxes of its label whose anchor is inside its polygon,
    debounced; retained ``<src>/slot/<name>`` states and low_stock / out_of_stock / restocked
    events (docs/shelves.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    slots: list[SlotSpec] = Field(
        min_length=1, max_length=MAX_SLOTS, description="The slots; see docs/shelves.md."
    )

    @field_validator("slots")
    @classmethod
    def _unique_names(cls, value: list[SlotSpec]) -> list[SlotSpec]:
        return unique_names(value, "slot")

    def labels_named(self) -> list[tuple[tuple[Any, ...], str]]:
        return [(("slots", i, "label"), slot.label) for i, slot in enumerate(self.slots)]
