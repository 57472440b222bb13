"""``motion``: a source's motion gate, which skips the model while the scene is still
(edge_agent/motion.py is the gate; docs/motion.md explains every option)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import Section

#: A preset's settings: each fills a key the user left out (explicit keys win).
PRESETS: dict[str, dict[str, Any]] = {
    # Animals are small and far, and a trap may see nothing for hours: a low threshold and
    # small area catch a fox at the edge of the flash, a long keep-alive costs almost nothing,
    # and a longer hold keeps an animal that freezes in view.
    "camera_trap": {
        "enabled": True,
        "sensitivity": 20,
        "min_area": 0.002,
        "keepalive_s": 120.0,
        "hold_s": 5.0,
        "adapt_s": 10.0,
    },
    # A hand in a shelf is big and close: a higher threshold and area ignore the flicker of
    # price labels and reflections; a short keep-alive keeps slot levels true; the hold lets
    # the model see the shelf once the hand has gone.
    "shelf": {
        "enabled": True,
        "sensitivity": 30,
        "min_area": 0.01,
        "keepalive_s": 30.0,
        "hold_s": 3.0,
        "adapt_s": 5.0,
    },
}
#: Vertices an ignore polygon may have: any outline a user draws by hand, rasterised fast.
MAX_IGNORE_POINTS = 64
#: Widths of the grayscale copy: below 32 px a person is a pixel; above 640 the gate costs
#: as much as the decode it saves nothing of.
MIN_WIDTH, MAX_WIDTH = 32, 640


class MotionConfig(Section):
    """Off by default: live counting needs every frame (a skipped frame is a track's gap)."""

    enabled: bool = Field(
        False,
        description="Skip the model on frames without motion (default: off; a preset turns it on).",
    )
    preset: Literal["camera_trap", "shelf"] | None = Field(
        None,
        description="Defaults for a use: camera_trap (sensitivity 20, min_area 0.002, "
        "keepalive_s 120, hold_s 5, adapt_s 10) or shelf (sensitivity 30, min_area 0.01, "
        "keepalive_s 30, hold_s 3, adapt_s 5). Turns the gate on; keys you set win.",
    )
    sensitivity: int = Field(
        25,
        ge=1,
        le=255,
        description="Levels (1 to 255) a pixel of the small copy must differ from the "
        "background in brightness or in either colour channel (YCrCb), after the frame's "
        "overall light change is removed, to count as changed.",
    )
    min_area: float = Field(
        0.005,
        gt=0,
        le=1,
        description="Fraction of the (not ignored) frame that must change to be motion "
        "(above 0, at most 1; 0.005 is a 23x23 px patch of a 640x480 frame).",
    )
    ignore: list[list[list[float]]] = Field(
        default_factory=list,
        description="Polygons never counted as changed (burnt-in timestamps, swaying "
        f"branches): each [[x, y], ...] normalised (0..1, x right, y down), 3 to "
        f"{MAX_IGNORE_POINTS} points.",
    )
    keepalive_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="Run the model at least this often without motion (above 0, at most a day, "
        "s), so retained counts and shelf slots stay true.",
    )
    hold_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Keep running the model this long after the last motion (0 to 3600 s), so "
        "an object that stops is seen still and tracks and zones settle.",
    )
    adapt_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Time constant (above 0, at most 3600 s) of the background's adaptation: an "
        "object that "
        "stops is part of the background after about this long (one frame folds in at most "
        "half of a change).",
    )
    lighting_area: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of the frame (above 0, at most 1) changing at once that is "
        "taken for a lighting change (a cloud, lights on): the background is re-learnt and "
        "the frame is not motion. 1 turns this off.",
    )
    width: int = Field(
        160,
        ge=MIN_WIDTH,
        le=MAX_WIDTH,
        description=f"Width in pixels ({MIN_WIDTH} to {MAX_WIDTH}) of the small colour copy "
        "the gate compares; the height keeps the aspect ratio.",
    )
    publish_skipped: bool = Field(
        False,
        description="Also publish the results of frames the model skipped (the previous "
        "predictions, marked inferred: false).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        # Before the fields are checked, so the filled keys are checked like typed ones; an
        # unknown preset is left for the Literal to refuse with the valid names.
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            preset = PRESETS.get(data["preset"])
            if preset is not None:
                return {**preset, **data}
        return data

    @field_validator("ignore")
    @classmethod
    def _polygons(cls, value: list[list[list[float]]]) -> list[list[list[float]]]:
        for i, polygon in enumerate(value):
            if not 3 <= len(polygon) <= MAX_IGNORE_POINTS:
                raise ValueError(
                    f"ignore polygon {i} needs 3 to {MAX_IGNORE_POINTS} points [x, y], but got "
                    f"{len(polygon)}"
                )
            for point in polygon:
                if len(point) != 2 or not all(0.0 <= v <= 1.0 for v in point):
                    raise ValueError(
                        f"ignore polygon {i}: a point is [x, y], each from 0 to 1 "
                        f"(normalised), but got {point}"
                    )
        return value
