"""Shelf slots, as the ``slots`` stage: how many of its item each slot holds, debounced, with
``low_stock`` / ``out_of_stock`` / ``restocked`` events and a retained state per slot.

Shelf items do not move, so no tracking is needed: a slot counts the boxes of its label whose
anchor (the centre by default) is inside its polygon on every frame, unconfirmed tracks
included. A hand reaching in front of the shelf hides items for a second or two; the debounce
(``SlotLevel``) keeps such a dip from changing anything, while a real removal changes the count
once, ``debounce_s`` after it happened. The options are in slot_options.py; docs/shelves.md
is the user's guide.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.analytics.slot_level import SlotLevel
from edge_agent.analytics.slot_options import SlotsOptions, SlotSpec, State
from edge_agent.fsutil import move_aside, write_atomic
from edge_agent.geometry import anchor_point_sets
from edge_agent.pipeline.stages import StageContext, register_stage
from edge_agent.polygons import PolygonSet
from edge_agent.types import Detections, Frame, Overlay, Publication, Result, SnapshotRequest

log = logging.getLogger(__name__)

FILL_DECIMALS = 3
#: Random hex characters after an event id's time: two events of one millisecond differ.
EVENT_ID_TOKEN_BYTES = 3


def event_type(before: State | None, after: State) -> str | None:
    """The event a committed state change fires (``before`` None: the first state of a slot
    with no saved one). An alert opens on entering low or out and closes with ``restocked``
    on reaching ok, so a partial refill (out -> low) fires nothing, and neither does a first
    state of ok: no one was told the slot was low."""
    if after == before:
        return None
    if after == "out":
        return "out_of_stock"
    if after == "low":
        return "low_stock" if before in (None, "ok") else None  # out -> low: still alerted
    return "restocked" if before in ("low", "out") else None  # never at a start (before None)


class _Slot:
    """One slot's committed state, what restarts remember of it, and its overlay."""

    def __init__(self, spec: SlotSpec, folder: Path | None) -> None:
        self.spec = spec
        self.level = SlotLevel(spec.debounce_s)
        self.state: State | None = None
        self.since: float | None = None
        self.file = None if folder is None else folder / f"{spec.name}.json"
        self.overlay = self._overlay("?")

    def _overlay(self, count: str) -> Overlay:
        s = self.spec
        tail = "" if self.state in (None, "ok") else f" {self.state}"
        points = tuple((float(x), float(y)) for x, y in s.polygon)
        return Overlay("zone", s.name, points, f"{s.label} {count}/{s.capacity}{tail}")

    def remembered(self) -> State | None:
        """The state the last run committed, if it was for the same label and capacity. A file
        that cannot be read back as one (damaged, hand edited) is moved aside and reported; the
        slot starts as with no saved state."""
        if self.file is None or not self.file.exists():
            return None
        try:
            kept = json.loads(self.file.read_text())
            state: State = kept["state"]
            since = float(kept["since"])
            label, capacity = kept["label"], kept["capacity"]
            if state not in ("ok", "low", "out"):
                raise ValueError(f"state is one of ok, low, out, but got {state!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._move_aside(exc)
            return None
        if label != self.spec.label or capacity != self.spec.capacity:
            return None  # the slot was reconfigured: its old state says nothing now
        self.since = since
        return state

    def _move_aside(self, exc: Exception) -> None:
        assert self.file is not None
        try:
            aside = move_aside(self.file).name
        except OSError as move_exc:
            aside = f"nowhere ({move_exc}): it will be replaced"
        log.error(
            "slot %r: its saved state %s cannot be read (%s); moved to %s, the slot starts as "
            "with no saved state",
            self.spec.name,
            self.file,
            f"{type(exc).__name__}: {exc}".splitlines()[0],
            aside,
        )

    def commit(self, ts: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The new debounced count is committed: the slot's payload and the event it fires."""
        s, count = self.spec, self.level.count
        assert count is not None
        before = self.remembered() if self.state is None else self.state
        after = s.state_of(count)
        if after != before:
            self.since = ts
        self.state = after
        fill = round(min(1.0, count / s.capacity), FILL_DECIMALS)
        payload = {
            "label": s.label,
            "count": count,
            "capacity": s.capacity,
            "fill": fill,
            "state": after,
            "since": self.since,
            "ts": ts,
        }
        self.overlay = self._overlay(str(count))
        self._remember(payload)
        kind = event_type(before, after)
        if kind is None:
            return payload, None
        event_id = f"{int(ts * 1000)}-{secrets.token_hex(EVENT_ID_TOKEN_BYTES)}"
        event = {"type": kind, "id": event_id, "slot": s.name, "label": s.label, "count": count}
        event.update(capacity=s.capacity, fill=fill, ts=ts, snapshot=None)
        return payload, event

    def _remember(self, payload: dict[str, Any]) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.file, json.dumps(payload).encode())
        except OSError as exc:  # the state is published anyway; a restart may alert again
            log.warning("slot %r: cannot save its state to %s (%s)", self.spec.name, self.file, exc)


class ShelfSlots:
    """The ``slots`` stage of one source: counts every slot on every frame, commits debounced
    counts, publishes retained states and events, and adds one overlay per slot."""

    name = "slots"
    needs_frame = False

    def __init__(self, options: SlotsOptions, context: StageContext) -> None:
        folder = None if context.state_dir is None else context.state_dir / "slots"
        specs = options.slots
        self.slots = [_Slot(spec, folder) for spec in specs]
        self._anchors = sorted({spec.anchor for spec in specs})
        self._groups = [self._anchors.index(spec.anchor) for spec in specs]
        self._size: tuple[int, int] | None = None
        self._pixels = PolygonSet([spec.polygon for spec in specs], self._groups)
        self._labels: list[str] | None = None
        self._class_ids = np.full(len(specs), -1, np.int64)
        self._of_slots = np.zeros(0, bool)
        self._no_boxes = np.full(len(specs), -1, np.int64)  # the counts of a frame without any
        self._one_class = False  # every slot holds the same label, which the model has
        self._warned: set[str] = set()

    def process(self, result: Result, frame: Frame | None) -> Result:
        seen = self._seen(result)
        for slot, n in zip(self.slots, seen.tolist(), strict=True):
            if n < 0:  # this frame cannot count the slot: the next change needs a new window
                slot.level.reset()
            elif slot.level.update(result.ts, n):
                payload, event = slot.commit(result.ts)
                result.publications.append(Publication("slot", (slot.spec.name,), payload))
                if event is not None:
                    result.publications.append(Publication("event", (), event))
                    request = SnapshotRequest(event["type"], result.ts, event=event)
                    result.snapshot_requests.append(request)
        result.overlays.extend([slot.overlay for slot in self.slots])
        return result

    def _seen(self, result: Result) -> np.ndarray:
        """(S,) this frame's count per slot; -1 for a slot it cannot count."""
        predictions = result.predictions
        if not isinstance(predictions, Detections):
            self._warn("task", "shelf slots need a detection model; nothing is counted")
            return np.full(len(self.slots), -1, np.int64)
        class_ids, of_slots = self._class_ids_for(result.labels)
        xyxy, class_id = predictions.xyxy, predictions.class_id
        wanted = of_slots[class_id]
        n_wanted = np.count_nonzero(wanted)
        if n_wanted == 0:
            return self._no_boxes.copy()
        if n_wanted < len(wanted):
            xyxy, class_id = xyxy[wanted], class_id[wanted]
        points = anchor_point_sets(xyxy, self._anchors)
        inside = self._pixel_polygons(result.frame_size).contains(points)  # (boxes, slots)
        if not self._one_class:  # else every box wanted is of every slot's class
            inside &= class_id[:, None] == class_ids[None, :]
        return self._no_boxes + np.count_nonzero(inside, axis=0)

    def _class_ids_for(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each slot's class id in this model (-1 when it lacks the label: a swapped model),
        and a bool per class: whether any slot holds it."""
        if labels != self._labels:
            index = {label: i for i, label in enumerate(labels)}
            self._class_ids = np.array([index.get(s.spec.label, -1) for s in self.slots])
            self._of_slots = np.zeros(len(labels), bool)
            self._of_slots[self._class_ids[self._class_ids >= 0]] = True
            self._no_boxes = np.where(self._class_ids >= 0, 0, -1)
            self._one_class = len(set(self._class_ids.tolist())) == 1 and self._class_ids[0] >= 0
            self._labels = list(labels)
            for slot, class_id in zip(self.slots, self._class_ids, strict=True):
                if class_id < 0:
                    self._warn(
                        slot.spec.label,
                        f"the model has no label {slot.spec.label!r}: slot {slot.spec.name!r} "
                        "keeps its last count until a model with it is loaded",
                    )
        return self._class_ids, self._of_slots

    def _pixel_polygons(self, size: tuple[int, int]) -> PolygonSet:
        """The slots' polygons in pixels of this frame size (the edge tolerance is in pixels)."""
        if size != self._size:
            scale = np.array(size, np.float64)
            polygons = [np.asarray(s.spec.polygon, np.float64) * scale for s in self.slots]
            self._pixels = PolygonSet(polygons, self._groups)
            self._size = size
        return self._pixels

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def close(self) -> None:
        pass


@register_stage("slots", SlotsOptions)
def build_slots(options: SlotsOptions, context: StageContext) -> ShelfSlots:
    return ShelfSlots(options, context)
