"""The ``events`` stage's options: how frames are grouped into sequences, which boxes count,
how often updates and exports go out, and the Camtrap DP metadata (camtrap_options.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.analytics.camtrap_options import CamtrapOptions

#: Wildlife Insights' default gap between two sequences, in seconds.
GAP_S = 60.0
#: Longest sequence by default: an hour, then its end (and snapshot) goes out.
MAX_SEQUENCE_S = 3600.0
#: Upper bound of max_sequence_s: a day; longer would keep a sequence's state for days.
MAX_SEQUENCE_LIMIT_S = 86400.0


class EventsOptions(BaseModel):
    """Camera-trap events: sequences of frames with animals, told on MQTT with a snapshot, and
    for an image-folder source a MegaDetector results file and a Camtrap DP package."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gap_s: float = Field(
        GAP_S,
        gt=0,
        description="A sequence ends at the first frame more than this many seconds (capture "
        "time) after its last counted box; the next box opens a new one.",
    )
    max_sequence_s: float = Field(
        MAX_SEQUENCE_S,
        gt=0,
        le=MAX_SEQUENCE_LIMIT_S,
        description="A sequence ends when it has lasted this many seconds (capture time), even "
        "if boxes keep coming (a feeder, a street): its 'end' and snapshot go out and the next "
        "counted box opens a new one. More than gap_s, at most 86400.",
    )
    labels: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Labels that open and extend sequences; default: every label.",
    )
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="Boxes below this confidence are not counted."
    )
    update_every_s: float = Field(
        10.0,
        ge=0,
        description="An 'update' goes out when an event's counts changed, at most this often "
        "(capture time); 0 sends every change.",
    )
    snapshot: bool = Field(
        True,
        description="Keep a copy of each open event's best frame (at most 1280 px) and ask "
        "the snapshot stage for it at the end. Without a 'snapshot' stage after this one, set "
        "false: the copies would be kept for nothing.",
    )
    export: bool | None = Field(
        None,
        description="Write the MegaDetector and Camtrap DP exports; default: for an image "
        "folder source. true on another kind of source is an error.",
    )
    export_dir: str = Field(
        "exports",
        min_length=1,
        description="Folder of the exports; a relative path is inside the source's state "
        "folder (<state_dir>/sources/<id>/).",
    )
    export_every_s: float = Field(
        30.0,
        ge=0,
        description="While images are processed, the exports are rewritten at most this often "
        "(seconds of the device's clock), and at least 20 times as long as the last rewrite "
        "took apart; always when the folder is done or the agent stops.",
    )
    camtrap: CamtrapOptions = Field(
        default_factory=CamtrapOptions,
        description="Deployment and project metadata for Camtrap DP; the package is written "
        "only when camtrap.latitude and camtrap.longitude are set.",
    )

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if labels is not None and len(set(labels)) != len(labels):
            raise ValueError(f"expected distinct labels, but got {list(labels)}")
        return labels

    @model_validator(mode="after")
    def _longer_than_gap(self) -> EventsOptions:
        if self.max_sequence_s <= self.gap_s:
            raise ValueError(
                f"max_sequence_s: expected more than gap_s ({self.gap_s:g}), but got "
                f"{self.max_sequence_s:g}"
            )
        return self

    def source_problem(self, kind: str) -> str | None:
        """Why this stage cannot run on a ``kind`` source (config/labels.py asks it)."""
        if self.export is True and kind != "folder":
            return (
                f"events: export: true needs an image folder source, but this source is a "
                f"{kind} (the exports list a folder's images); leave export unset or false"
            )
        return None

    def labels_named(self) -> list[tuple[tuple[Any, ...], str]]:
        named: list[tuple[tuple[Any, ...], str]] = [
            (("labels", i), label) for i, label in enumerate(self.labels or ())
        ]
        return named + [(("camtrap", *loc), label) for loc, label in self.camtrap.labels_named()]
