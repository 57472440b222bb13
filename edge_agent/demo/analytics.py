"""The demo's counting story: a line the sliding bag crosses and two shelf slots the hand
empties, configured as a user would (stages in the source's chain), and a sink that prints
what they publish as it happens and sums it up at the end.

The stages are checked by the same config models as a YAML file's, so the demo cannot show an
option the agent would refuse.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from edge_agent.config.sources import StageConfig
from edge_agent.demo import clip
from edge_agent.types import Frame, Result

#: Seconds a slot's new count must hold before it changes (a hand passing is shorter).
SLOT_DEBOUNCE_S = 1.5
#: The slots the hand empties, as fractions of the 512 px scene (asset boxes 14 and 4, with
#: a margin): a can at the bottom left, the bag at the top right.
SLOTS = (
    ("can-bottom-left", "can", [[0.13, 0.77], [0.30, 0.77], [0.30, 1.0], [0.13, 1.0]]),
    ("bag-top-right", "bag", [[0.76, 0.04], [0.98, 0.04], [0.98, 0.29], [0.76, 0.29]]),
)
LINE_NAME = "top-shelf"


def demo_stages(labels: list[str]) -> list[StageConfig]:
    """counts -> track -> lines -> slots -> snapshot, as a config file would list them; a line
    or slot whose label the bundle lacks is left out (the agent would refuse it)."""
    (x, y_top), (_, y_bottom) = clip.LINE
    slots = [(name, label, polygon) for name, label, polygon in SLOTS if label in labels]
    specs: list[dict[str, Any]] = [{"type": "counts"}, {"type": "track"}]
    if clip.SLIDE_LABEL in labels:
        specs.append(
            {
                "type": "lines",
                "lines": [
                    {
                        "name": LINE_NAME,
                        # Drawn upwards, so "in" (its right) is to the right on screen.
                        "start": [x, y_bottom],
                        "end": [x, y_top],
                        "in_side": "right",
                        "anchor": "center",
                        "labels": [clip.SLIDE_LABEL],
                    }
                ],
            }
        )
    if slots:
        slot_specs = [
            {"name": n, "label": lb, "polygon": p, "capacity": 1, "debounce_s": SLOT_DEBOUNCE_S}
            for n, lb, p in slots
        ]
        specs.append({"type": "slots", "slots": slot_specs})
    specs.append({"type": "snapshot"})
    return [StageConfig.model_validate(spec) for spec in specs]


@dataclass
class Happenings:
    """A sink printing slot events and line crossings as they are published (between the
    counts table's rows), and keeping them for the summary."""

    fps: float
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    events: list[str] = field(default_factory=list)
    line: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    snapshots: int = 0
    name: str = "demo-happenings"
    needs_frame: bool = False
    _start: float | None = None

    def emit(self, result: Result, frame: Frame | None) -> None:
        if self._start is None:
            self._start = result.ts
        for pub in result.publications:
            body = pub.payload
            if pub.kind == "snapshot":
                self.snapshots += 1
            elif isinstance(body, bytes):
                continue
            elif pub.kind == "event" and "slot" in body:
                at = body["ts"] - self._start
                text = f"{at:5.1f} s  slot {body['slot']}: {body['type'].replace('_', ' ')}"
                self._say(text)
            elif pub.kind == "line" and (body["in"], body["out"]) != tuple(self.line.values()):
                if body["in"] + body["out"] > sum(self.line.values()):
                    at = body["ts"] - self._start
                    self._say(
                        f"{at:5.1f} s  line {pub.levels[0]}: {body['in']} in, {body['out']} out"
                    )
                self.line = {"in": body["in"], "out": body["out"]}

    def _say(self, text: str) -> None:
        self.events.append(text.strip())
        print(f"  >> {text}", file=self.stream, flush=True)

    def close(self) -> None:
        pass
