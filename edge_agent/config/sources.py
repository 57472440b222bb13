"""``sources[]``: where frames come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edge_agent.config.base import Section
from edge_agent.config.ids import SOURCE_ID_CHARS, check_id
from edge_agent.config.motion import MotionConfig
from edge_agent.publish.topics import RESERVED_SOURCE_IDS

__all__ = ["SOURCE_ID_CHARS", "SourceConfig", "StageConfig"]

#: URL schemes of live streams, and device paths of cameras (/dev/v4l/by-id/... names a USB
#: camera stably across reboots; /dev/videoN may change): edge_agent.sources.resolve_kind and
#: check-config read a uri's kind with is_camera / is_stream. Any other uri is a video file or
#: an image folder.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
CAMERA_DEVICE_PREFIXES = ("/dev/video", "/dev/v4l/")
#: No camera or decoder on an edge device delivers more; a larger limit is a unit mistake (a
#: period in milliseconds) and would mean "no limit" without saying so.
MAX_FPS_LIMIT = 1000.0
#: Reopen waits beyond an hour make a camera that came back look dead for longer than anyone
#: waits for it.
MAX_RECONNECT_DELAY_S = 3600.0
#: A camera that has not answered within a minute is down; a longer bound only delays saying so.
MAX_CAPTURE_TIMEOUT_S = 60.0


def is_camera(uri: str | int) -> bool:
    """A camera index (``0``, ``"0"``) or a camera device path."""
    if isinstance(uri, int):
        return True
    return uri.strip().isdigit() or uri.startswith(CAMERA_DEVICE_PREFIXES)


def is_stream(uri: str | int) -> bool:
    """A URL of a live stream (rtsp, http)."""
    return isinstance(uri, str) and uri.lower().startswith(STREAM_SCHEMES)


def source_kind(cfg: SourceConfig) -> str:
    """The kind ``auto`` stands for, decided from the form of the uri (explicit kinds win): a
    path is a folder when one is there, else a file."""
    if cfg.kind != "auto":
        return cfg.kind
    if is_camera(cfg.uri):
        return "camera"
    if is_stream(cfg.uri):
        return "stream"
    return "folder" if Path(str(cfg.uri)).expanduser().is_dir() else "file"


def stream_url_problem(uri: str) -> str | None:
    """Why a stream URL cannot be opened (no host, a bad port), or None. The message does not
    repeat the URL: it may hold a password."""
    scheme = uri.partition("://")[0]
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number or out of range, a broken [IPv6]
        return f"{scheme}:// URL cannot be read: {exc}"
    if not host:
        return f"{scheme}:// URL has no host; expected {scheme}://HOST[:PORT]/PATH"
    if port == 0:
        return f"{scheme}:// URL has port 0; give a port from 1 to 65535 or none"
    return None


class StageConfig(Section):
    """One stage of a source's chain: ``type`` names a registered stage, the other keys are that
    stage's own options (checked against its options model)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="Stage type, e.g. counts.")

    _options: BaseModel | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _known_stage(self) -> StageConfig:
        # Imported here: the stage registry imports the analytics stages, which need the config.
        from edge_agent.pipeline.stages import stage_options

        self._options = stage_options(self.type, dict(self.model_extra or {}))
        return self

    def options(self) -> BaseModel:
        """The stage's options, validated by its own model when the config was loaded."""
        assert self._options is not None  # set by the validator
        return self._options


#: Stage types whose options list named things, each named thing one topic (and one state
#: file) per source: ``<src>/zone/<name>/...``, ``<src>/line/<name>``, ``<src>/slot/<name>``.
NAMED_LISTS = {"zones": "zones", "lines": "lines", "slots": "slots"}


#: Stage types a source may have only once: two trackers would hand out the same ids from one
#: id file, two events or snapshot stages would write one folder, two counts one topic.
ONCE_PER_SOURCE = ("counts", "track", "events", "snapshot", "collect")


def _once_problem(stages: list[StageConfig]) -> str | None:
    types = [s.type for s in stages]
    twice = [t for t in ONCE_PER_SOURCE if types.count(t) > 1]
    if twice:
        return f"a source may have one {twice[0]!r} stage, but this one has {types.count(twice[0])}"
    return None


def _names_problem(stages: list[StageConfig]) -> str | None:
    """Two zones (or lines, or slots) of one source with one name would share a topic and a
    tally file, each overwriting the other: refused even across two stages of a type."""
    for type_name, key in NAMED_LISTS.items():
        names = [
            item.name
            for stage in stages
            if stage.type == type_name
            for item in getattr(stage.options(), key, ())
        ]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            return f"{key} names must be unique in a source, but {dupes} appear more than once"
    return None


def _track_problem(stages: list[StageConfig]) -> str | None:
    """A stage option that reads track ids (collect's ``disagreement``) needs a tracker
    before it, one that lets a track's label change: a class-consistent track never does."""
    for i, stage in enumerate(stages):
        field = getattr(stage.options(), "wants_track", lambda: None)()
        if not field:
            continue
        track = next((s.options() for s in stages[:i] if s.type == "track"), None)
        if track is None:
            return f"{stage.type}.{field} needs a 'track' stage before it in the same source"
        if getattr(track, "class_consistent", False):
            return (
                f"{stage.type}.{field} needs track.class_consistent: false (a track that only "
                "matches boxes of its own label never changes label)"
            )
    return None


def _lost_problem(stages: list[StageConfig]) -> str | None:
    """A zone or line that forgets a track sooner than the tracker does would count one object
    twice when it is hidden between the two times (it exits, then enters again)."""
    track = next((s.options() for s in stages if s.type == "track"), None)
    track_lost = getattr(track, "lost_s", None)
    if track_lost is None:
        return None
    for stage in stages:
        lost = getattr(stage.options(), "lost_s", None) if stage.type != "track" else None
        if lost is not None and lost < track_lost:
            return (
                f"{stage.type}.lost_s ({lost:g} s) must be at least track.lost_s "
                f"({track_lost:g} s): a track hidden in between would be counted twice"
            )
    return None


class SourceConfig(Section):
    id: str = Field(
        description="Name of the source, one MQTT topic level as written: letters, digits, '_' "
        "and '-'; not cmd. Any other character is refused, not replaced."
    )
    uri: str | int = Field(
        description="Camera index (0) or /dev/videoN, rtsp:// or http(s):// URL, video file path, "
        "or a folder of images. A URL without a host (rtsp://:554/x) is refused; check-config "
        "checks that a file or folder exists and can be read."
    )
    kind: Literal["auto", "camera", "stream", "file", "folder"] = Field(
        "auto", description="What the uri is; 'auto' decides from its form."
    )
    fps_limit: float | None = Field(
        None,
        gt=0,
        le=MAX_FPS_LIMIT,
        description="Process at most this many frames per second (above 0, at most "
        f"{MAX_FPS_LIMIT:g}); none = as fast as possible.",
    )
    on_eof: Literal["stop", "loop"] = Field(
        "stop", description="At the end of a video file or image folder: stop this source or loop."
    )
    capture_timeout_s: float = Field(
        5.0,
        gt=0,
        le=MAX_CAPTURE_TIMEOUT_S,
        description="A live source's open or read that takes longer fails (the camera is "
        "stalled or unreachable) and is retried; shutdown never waits for one (above 0, at most "
        f"{MAX_CAPTURE_TIMEOUT_S:g} s).",
    )
    reconnect_initial_delay_s: float = Field(
        0.5,
        gt=0,
        le=MAX_RECONNECT_DELAY_S,
        description="Wait between reopen attempts while a live source is likely coming back "
        f"(the first reconnect_fast_for_s of an outage; above 0, at most {MAX_RECONNECT_DELAY_S:g}"
        " s), jittered by 20 %.",
    )
    reconnect_fast_for_s: float = Field(
        60.0,
        ge=0,
        le=MAX_RECONNECT_DELAY_S,
        description="How long an outage is retried at reconnect_initial_delay_s (a camera "
        "rebooting) before the wait starts doubling (a camera that stays away); a 404 or 401 "
        f"skips this phase (0 to {MAX_RECONNECT_DELAY_S:g} s).",
    )
    reconnect_max_delay_s: float = Field(
        60.0,
        gt=0,
        le=MAX_RECONNECT_DELAY_S,
        description="Longest wait between reopen attempts after the quick phase (the delay "
        f"doubles up to it; at most {MAX_RECONNECT_DELAY_S:g} s, not below "
        "reconnect_initial_delay_s).",
    )

    motion: MotionConfig = Field(
        default_factory=MotionConfig,
        description="The motion gate: run the model only when the picture changes "
        "(off by default; presets for camera traps and shelves); see docs/motion.md.",
    )
    stages: list[StageConfig] = Field(
        default_factory=lambda: [StageConfig(type="counts")],
        description="This source's stages, in order, after the model: each result passes "
        "through them before it is published. Default: [{type: counts}].",
    )

    @field_validator("id")
    @classmethod
    def _id_is_topic_safe(cls, value: str) -> str:
        return check_id(value, SOURCE_ID_CHARS, RESERVED_SOURCE_IDS)

    @field_validator("uri", mode="before")
    @classmethod
    def _uri_form(cls, value: Any) -> Any:
        # Before pydantic's own check, so one message says what a uri may be (a union's
        # errors come one per member) and a bool is not camera 0 or 1.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(
                f"expected a camera index (0, 1, ...), a path or a URL, but got {value!r}"
            )
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"a camera index is 0 or more, but got {value}")
            return value
        if not value.strip():
            raise ValueError("must not be empty: give a camera index, a path or a URL")
        if "\0" in value:  # no path or URL holds one; the OS refuses it with a bare ValueError
            raise ValueError("must not contain a NUL character (\\0)")
        problem = stream_url_problem(value) if is_stream(value) else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _stages_in_order(self) -> SourceConfig:
        from edge_agent.pipeline.stages import order_problem  # the registry imports config

        problem = order_problem([s.type for s in self.stages])
        if problem:
            raise ValueError(f"stages: {problem}")
        problem = (
            _once_problem(self.stages)
            or _names_problem(self.stages)
            or _lost_problem(self.stages)
            or _track_problem(self.stages)
        )
        if problem:
            raise ValueError(f"stages: {problem}")
        return self

    @model_validator(mode="after")
    def _delays_ordered(self) -> SourceConfig:
        if self.reconnect_max_delay_s < self.reconnect_initial_delay_s:
            raise ValueError("reconnect_max_delay_s must be >= reconnect_initial_delay_s")
        return self
