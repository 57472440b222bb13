"""The types that cross a stage boundary: Frame, Detections, Classifications, Result, and what
analytics stages add to a result (Publication, Overlay, SnapshotRequest).

Every stage takes and returns these, so shapes are checked once, at construction, with an
error that says what was expected and what arrived (the supervision habit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge_agent.geometry import xyxy_to_custom_vision


def _check_array(name: str, value: Any, dtype: type, shape: tuple[int | None, ...]) -> np.ndarray:
    """Return ``value`` as an array of ``dtype`` or raise ValueError naming expected vs got."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a np.ndarray, but got {type(value).__name__}")
    if value.ndim != len(shape) or any(
        d is not None and d != got for d, got in zip(shape, value.shape, strict=True)
    ):
        want = "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, but got shape {value.shape}")
    return value.astype(dtype, copy=False)


@dataclass(frozen=True)
class Frame:
    """One captured image. ``origin`` keeps where it came from (a file name, a URL)."""

    image: np.ndarray
    source_id: str
    seq: int
    ts: float
    origin: str = ""

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            got = img.dtype if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"Frame.image must be a uint8 np.ndarray, but got {got}")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Frame.image must have shape (H, W, 3) BGR, but got {img.shape}")

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def info(self) -> FrameInfo:
        return FrameInfo(self.source_id, self.seq, self.ts, self.origin, self.width, self.height)


@dataclass(frozen=True)
class FrameInfo:
    """A frame without its picture: all a result needs once the model has the tensor.

    The agent passes this on instead of the Frame when no hook wants the picture, so each
    frame's memory (6 MB at 1080p) is freed as soon as it is pre-processed.
    """

    source_id: str
    seq: int
    ts: float
    origin: str
    width: int
    height: int


#: ``tracker_id`` of a detection the tracker has not confirmed (yet): never counted.
UNCONFIRMED = -1


@dataclass
class Detections:
    """Boxes in source-frame pixels (xyxy) with confidence, class and optional track id.

    ``tracker_id`` is set by the ``track`` stage: a track's id, or UNCONFIRMED (-1) for a box
    no confirmed track holds. ``data`` holds other per-detection arrays (length N on the first
    axis) that indexing carries along, such as the zones each box is in.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = _check_array("xyxy", self.xyxy, np.float32, (None, 4))
        n = len(self.xyxy)
        self.confidence = _check_array("confidence", self.confidence, np.float32, (n,))
        self.class_id = _check_array("class_id", self.class_id, np.int32, (n,))
        if self.tracker_id is not None:
            self.tracker_id = _check_array("tracker_id", self.tracker_id, np.int64, (n,))
        for key, value in self.data.items():
            if not isinstance(value, np.ndarray) or value.ndim == 0 or len(value) != n:
                got = getattr(value, "shape", type(value).__name__)
                raise ValueError(f"data[{key!r}] must be an array of length {n}, but got {got}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | int | list[int]) -> Detections:
        """Select with a boolean mask, an index array, a slice or one integer."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise ValueError(f"mask must have shape ({len(self)},), but got shape {index.shape}")
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={key: value[index] for key, value in self.data.items()},
        )

    def confirmed(self) -> np.ndarray:
        """A mask of the boxes a confirmed track holds (none when the detections are untracked)."""
        if self.tracker_id is None:
            return np.zeros(len(self), bool)
        return np.asarray(self.tracker_id != UNCONFIRMED, bool)

    def to_custom_vision_boxes(self, width: int, height: int) -> np.ndarray:
        """Boxes as Azure Custom Vision shapes them: normalised left, top, width, height."""
        return xyxy_to_custom_vision(self.xyxy, width, height)


@dataclass
class Classifications:
    """Scores per label for one image; ``multilabel`` says whether they are independent."""

    scores: np.ndarray
    multilabel: bool = False

    def __post_init__(self) -> None:
        self.scores = _check_array("scores", self.scores, np.float32, (None,))

    def top(self, k: int = 1) -> list[tuple[int, float]]:
        """The k best (class index, score) pairs, best first."""
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(int(i), float(self.scores[i])) for i in order]

    def above(self, threshold: float | np.ndarray) -> np.ndarray:
        """Indices of classes whose score reaches the threshold (scalar or per class)."""
        return np.flatnonzero(self.scores >= threshold)

    def decided(self, class_thresholds: np.ndarray) -> np.ndarray:
        """The labels this frame is given, as a bool per class: a multilabel classifier every
        label whose score reaches its threshold, a multiclass one only its top class, and only
        when that score reaches the class's threshold. The one rule the counts stage, serve's
        ``passesThreshold`` and the trainer's per-class thresholds all follow."""
        if class_thresholds.shape != self.scores.shape:
            raise ValueError(
                f"class_thresholds must hold one value per class, shape {self.scores.shape}, "
                f"but got shape {class_thresholds.shape}"
            )
        passing = self.scores >= class_thresholds
        if not self.multilabel:
            passing &= np.arange(len(self.scores)) == int(np.argmax(self.scores))
        return np.asarray(passing, bool)


#: What a stage may publish beside the result; publish/ maps each kind to its topic, retain flag
#: and QoS (docs/mqtt.md): ``zone`` -> ``<src>/zone/<zone>/<label>``, ``line`` -> ``<src>/line/
#: <line>``, ``slot`` -> ``<src>/slot/<slot>``, ``event`` -> ``<src>/event``, ``snapshot`` ->
#: ``<src>/snapshot``.
PublicationKind = Literal["zone", "line", "slot", "event", "snapshot"]


@dataclass
class Publication:
    """One message a stage asks the sinks to publish beside the frame's result.

    ``levels`` are the topic levels after the kind (``(zone, label)`` for a zone count, ``()``
    for an event); the publisher makes each one topic-safe. ``payload`` is a JSON-ready dict,
    or JPEG bytes for a snapshot.
    """

    kind: PublicationKind
    levels: tuple[str, ...]
    payload: dict[str, Any] | bytes


@dataclass(frozen=True)
class Overlay:
    """A shape a stage wants drawn on annotated frames: a zone's polygon or a line, in
    normalised (x, y) points, with a short caption (its counts)."""

    kind: Literal["zone", "line"]
    name: str
    points: tuple[tuple[float, float], ...]
    caption: str = ""


@dataclass
class SnapshotRequest:
    """Asks the ``snapshot`` stage for an annotated JPEG. ``image``/``predictions`` are a frame
    kept earlier (an event's best frame); None means this frame. When the snapshot is written,
    its file name is set as ``event["snapshot"]`` (an event payload published later in the same
    result) before the publisher sees it."""

    reason: str
    ts: float
    image: np.ndarray | None = None
    predictions: Detections | None = None
    event: dict[str, Any] | None = None


@dataclass
class Result:
    """What the agent concluded about one frame; payloads.py turns it into the MQTT payload."""

    source_id: str
    seq: int
    ts: float
    model: str
    task: str
    labels: list[str]
    frame_size: tuple[int, int]  # (width, height) of the source frame
    predictions: Detections | Classifications
    counts: dict[str, int] = field(default_factory=dict)  # filled by the "counts" stage
    timing_ms: dict[str, float] = field(default_factory=dict)
    origin: str = ""
    #: Score threshold per label (float32) of the model that made this result; classifier counts
    #: use it. None for a result made without a model (tests, tools).
    class_thresholds: np.ndarray | None = None
    #: False when the motion gate kept this frame from the model: ``predictions`` are the
    #: source's previous ones, standing for a scene that did not change.
    inferred: bool = True
    #: Filled by analytics stages, in chain order: messages for the publisher, shapes for
    #: annotated frames, snapshots for the ``snapshot`` stage.
    publications: list[Publication] = field(default_factory=list)
    overlays: list[Overlay] = field(default_factory=list)
    snapshot_requests: list[SnapshotRequest] = field(default_factory=list)
