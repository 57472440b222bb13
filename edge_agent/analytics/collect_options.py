"""Options of the ``collect`` stage (collect.py): which frames are worth labelling, and the caps
that let it run unattended for a year (docs/field-data.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Scores between these are where a detector or classifier hesitates: below 0.3 it is mostly
#: background, above 0.6 mostly right (the usual deployment thresholds sit at 0.5).
DEFAULT_SCORE_BAND = (0.3, 0.6)
#: One frame in a thousand at random: at 5 fps about 18 an hour, before the rate cap.
DEFAULT_SAMPLE_RATE = 0.001
#: 500 MB hold about 3 000 frames of 1080p at JPEG quality 90 (~150 kB each): a labelling
#: session's worth, and small beside an SD card.
DEFAULT_MAX_BYTES = 500_000_000
MIN_MAX_BYTES = 1_000_000
MAX_MAX_BYTES = 1_000_000_000_000
#: 60 an hour (and one per 5 s): a busy scene cannot fill the folder with one afternoon, and
#: consecutive frames (near-duplicates) are not all kept.
DEFAULT_MAX_PER_HOUR = 60
DEFAULT_MIN_INTERVAL_S = 5.0
DEFAULT_QUALITY = 90


class CollectOptions(BaseModel):
    """Keep frames the model is unsure about, with its predictions as pre-labels, as a COCO
    dataset under the source's ``field/`` folder, for labelling and the next training run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    score_band: tuple[float, float] | None = Field(
        DEFAULT_SCORE_BAND,
        description="[low, high]: keep a frame with a box (or a classifier's top score) scoring "
        "from low to high, both included; null: off. Boxes under model.score_threshold never "
        "reach the stage: lower it to see the band's low end.",
    )
    disagreement: bool = Field(
        False,
        description="Keep a frame where a track's label differs from its label in the frame "
        "before; needs a track stage before this one, with class_consistent: false.",
    )
    sample_rate: float = Field(
        DEFAULT_SAMPLE_RATE,
        ge=0.0,
        le=1.0,
        description="Share of frames kept at random (0 to 1; 0: off), whatever the scores: "
        "what the model finds easy, for a balanced set.",
    )
    seed: int | None = Field(
        None,
        description="Seed of the random sample; null: a new seed at every start, so restarts "
        "do not repeat one pattern.",
    )
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=MIN_MAX_BYTES,
        le=MAX_MAX_BYTES,
        description="Bytes the field/ folder may hold (images and annotations); when a new "
        "frame does not fit, the oldest frames are removed first.",
    )
    max_per_hour: int = Field(
        DEFAULT_MAX_PER_HOUR,
        ge=1,
        description="Most frames kept in any hour of capture time; more are skipped (counted).",
    )
    min_interval_s: float = Field(
        DEFAULT_MIN_INTERVAL_S,
        ge=0.0,
        description="Seconds of capture time between two kept frames; frames sooner are "
        "skipped (counted).",
    )
    quality: int = Field(DEFAULT_QUALITY, ge=1, le=100, description="JPEG quality, 1 to 100.")
    max_width: int | None = Field(
        None,
        ge=160,
        le=7680,
        description="Wider frames are scaled down to this width (pixels), boxes with them; "
        "null: kept as captured (labellers need the pixels).",
    )

    @field_validator("score_band")
    @classmethod
    def _band(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] < value[1] <= 1.0:
            raise ValueError(
                f"expected [low, high] with 0 <= low < high <= 1 (scores), but got {list(value)}"
            )
        return value

    def wants_track(self) -> str | None:
        """The option that needs a ``track`` stage before this one (config/sources.py checks
        it), or None."""
        return "disagreement" if self.disagreement else None
