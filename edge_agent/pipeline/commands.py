"""What the agent does for each MQTT command (publish/commands.py parses and answers them):
the handlers need the running pipeline (its model slot, its sources' frames, its stats).

``snapshot`` asks the source's capture thread for its next frame (``SnapshotDesk``), encodes it
as JPEG and publishes it like the snapshot stage does, on ``<src>/snapshot``; ``set_threshold``
changes the running model's score thresholds until the next model swap or restart (the config
file keeps what starts); ``reload_config`` is answered by whoever runs the agent from a config
file (``edge-agent run``): it checks the file first and refuses a bad one with its problems.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge_agent.publish.commands import CommandRefused, Handler
from edge_agent.publish.redact import redact
from edge_agent.types import Frame, Publication

if TYPE_CHECKING:
    from edge_agent.pipeline.agent import Agent

#: How long a snapshot command waits for the source's next frame, s.
SNAPSHOT_WAIT_S = 5.0
SNAPSHOT_JPEG_QUALITY = 85

#: Answers a reload request: the reply's ``result``, or raises CommandRefused.
ReloadHook = Callable[[], Mapping[str, Any]]


@dataclass
class _Wanted:
    done: threading.Event = field(default_factory=threading.Event)
    frame: Frame | None = None


class SnapshotDesk:
    """Snapshot requests per source, fulfilled by that source's capture thread with its next
    frame. ``wanted`` is one dict lookup: the capture loop asks it on every frame."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: dict[str, list[_Wanted]] = {}

    def wanted(self, source_id: str) -> bool:
        return source_id in self._wanted

    def fulfil(self, frame: Frame) -> None:
        with self._lock:
            waiting = self._wanted.pop(frame.source_id, [])
        for w in waiting:
            w.frame = frame
            w.done.set()

    def take(self, source_id: str, timeout_s: float) -> Frame | None:
        w = _Wanted()
        with self._lock:
            self._wanted.setdefault(source_id, []).append(w)
        if not w.done.wait(timeout_s):
            with self._lock:
                left = [x for x in self._wanted.get(source_id, []) if x is not w]
                if left:
                    self._wanted[source_id] = left
                else:
                    self._wanted.pop(source_id, None)
        return w.frame


def agent_handlers(agent: Agent, reload: ReloadHook | None) -> dict[str, Handler]:
    def ping(_: Any) -> Mapping[str, Any]:
        pub = agent.publisher
        return {"pong": True, "state": agent.health.state, "run": pub.run_id if pub else None}

    def get_stats(_: Any) -> Mapping[str, Any]:
        pub = agent.publisher
        if pub is None or pub.stats_query is None:
            raise CommandRefused("no stats reporter is running", "unavailable")
        return pub.stats_query()

    def get_config(_: Any) -> Mapping[str, Any]:
        return redact(agent.cfg.model_dump(mode="json"))

    def set_threshold(args: Any) -> Mapping[str, Any]:
        slot = agent.slot
        if slot is None:
            raise CommandRefused("the model is not loaded", "unavailable")
        predictor = slot.current
        labels = list(predictor.bundle.manifest.labels)
        thresholds = np.array(predictor.thresholds, np.float32)  # a copy, swapped in whole
        if args.label is None:
            thresholds[:] = args.score
        elif args.label in labels:
            thresholds[labels.index(args.label)] = args.score
        else:
            raise CommandRefused(
                f"label {args.label!r} is not one of the model's labels {labels}", "bad_label"
            )
        predictor.set_thresholds(thresholds)
        return {
            "thresholds": {
                lab: round(float(t), 4) for lab, t in zip(labels, thresholds, strict=True)
            }
        }

    def snapshot(args: Any) -> Mapping[str, Any]:
        ids = [s.id for s in agent.cfg.sources]
        if args.source not in ids:
            raise CommandRefused(f"unknown source {args.source!r}; sources: {ids}", "bad_source")
        frame = agent.snapshots.take(args.source, SNAPSHOT_WAIT_S)
        if frame is None:
            raise CommandRefused(
                f"source {args.source!r} gave no frame within {SNAPSHOT_WAIT_S:g} s", "timeout"
            )
        ok, jpeg = cv2.imencode(
            ".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY]
        )
        if not ok:
            raise CommandRefused("the frame could not be encoded as JPEG", "failed")
        data = jpeg.tobytes()
        pub = agent.publisher
        if pub is not None:
            pub.publish(args.source, Publication("snapshot", (), data))
        topic = pub.topics.snapshot(args.source) if pub is not None else None
        return {"topic": topic, "bytes": len(data), "frame_ts": frame.ts, "ts": time.time()}

    def reload_config(_: Any) -> Mapping[str, Any]:
        if reload is None:
            raise CommandRefused("this agent was not started from a config file", "unavailable")
        return reload()

    return {
        "ping": ping,
        "get_stats": get_stats,
        "get_config": get_config,
        "set_threshold": set_threshold,
        "snapshot": snapshot,
        "reload_config": reload_config,
    }
