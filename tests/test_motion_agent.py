"""The motion gate in the running agent, on clips whose truth is known (the toy detector finds
coloured blocks on its window grid): a still, noisy scene is inferred only at warm-up and
keep-alives; a block that crosses a line with the gate on is counted once; one that stops in a
zone stays counted while the model rests; skipped frames carry the previous predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.config import AgentConfig, ModelConfig, SourceConfig
from edge_agent.config.sources import StageConfig
from edge_agent.pipeline import Agent
from edge_agent.types import Result
from tools.toy_models import colour_blocks_bundle

FPS = 10
STILL = 30  # frames of an empty, noisy scene before the block comes
#: The block's left edge while it moves (64 px steps, each held two frames), then where it stops.
MOVES = [x for x in range(0, 449, 64) for _ in range(2)]
STOPPED = 50  # frames it then stands still, inside the zone
ROW = (288, 384)


def write_clip(path: Path) -> int:
    """640x480 at FPS with Gaussian sensor noise in every frame: STILL empty frames, a blue
    block moving right across x = 0.55, then standing in the right half for STOPPED frames."""
    rng = np.random.default_rng(0)
    xs = [None] * STILL + MOVES + [MOVES[-1]] * STOPPED
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    for x in xs:
        img = np.full((480, 640, 3), 60, np.float32)
        if x is not None:
            img[ROW[0] : ROW[1], x : x + 128] = (255, 0, 0)
        img += rng.normal(0, 3, img.shape)
        writer.write(np.clip(img, 0, 255).astype(np.uint8))
    writer.release()
    return len(xs)


STAGES: list[dict[str, Any]] = [
    {"type": "counts"},
    {"type": "track", "birth_hits": 2},
    {"type": "zones", "zones": [{"name": "right", "polygon": [[0.55, 0], [1, 0], [1, 1],
                                                             [0.55, 1]], "anchor": "center"}]},
    {"type": "lines", "lines": [{"name": "door", "start": [0.55, 1], "end": [0.55, 0],
                                 "in_side": "right", "anchor": "center"}]},
]  # fmt: skip


def run(tmp_path: Path, motion: dict[str, Any] | None) -> list[Result]:
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        colour_blocks_bundle(bundle)
        write_clip(tmp_path / "clip.avi")
    source: dict[str, Any] = {"id": "cam", "uri": str(tmp_path / "clip.avi")}
    if motion is not None:
        source["motion"] = motion
    cfg = AgentConfig(
        device_id="gate",
        model=ModelConfig(bundle=bundle),
        sources=[
            SourceConfig.model_validate(
                {**source, "stages": [StageConfig.model_validate(s) for s in STAGES]}
            )
        ],
        state_dir=tmp_path / ("state-gated" if motion else "state"),  # tallies persist
    )
    results: list[Result] = []
    agent = Agent(cfg, on_result=lambda r, f: results.append(r), publish=False)
    with agent:
        agent.wait()
    return results


def last_of(results: list[Result], kind: str) -> dict[str, Any]:
    found = [p.payload for r in results for p in r.publications if p.kind == kind]
    assert found, kind
    body = found[-1]
    assert isinstance(body, dict)
    return body


GATE = {"enabled": True, "keepalive_s": 2.0, "hold_s": 0.5, "adapt_s": 1.0}


def test_the_gate_skips_the_still_scene_and_keeps_every_count(tmp_path: Path) -> None:
    ungated = run(tmp_path, None)
    gated = run(tmp_path, GATE)
    total = STILL + len(MOVES) + STOPPED
    assert len(gated) == len(ungated) == total  # every frame is a result, skipped or not
    inferred = [r.seq for r in gated if r.inferred]
    assert all(r.inferred for r in ungated)
    # The still start: warm-up, then nothing until the block comes (keep-alives every 2 s).
    still = [s for s in inferred if s < STILL]
    assert 1 <= len(still) <= 1 + STILL / FPS / 2 + 1
    # While it moves every frame is inferred; once it stands, only hold and keep-alives.
    moving = range(STILL, STILL + len(MOVES))
    assert all(s in inferred for s in moving)
    standing = [s for s in inferred if s >= STILL + len(MOVES)]
    # It stays "motion" until the background takes it in (adapt_s), then hold_s, then
    # keep-alives: far fewer than the frames it stands.
    assert len(standing) <= STOPPED / 2, standing
    assert len(inferred) < 0.6 * total
    # The same counts as without the gate: one crossing in, one occupant who entered once.
    for results in (ungated, gated):
        line = last_of(results, "line")
        assert (line["in"], line["out"]) == (1, 0)
        zone = last_of(results, "zone")
        assert (zone["count"], zone["entries"], zone["exits"]) == (1, 1, 0)
    # A skipped frame repeats the previous predictions, tracked under the same id.
    last = gated[-1]
    assert not last.inferred and len(last.predictions) == 1
    assert last.predictions.tracker_id is not None and last.predictions.tracker_id[0] > 0


def test_a_preset_turns_the_gate_on_and_bad_motion_config_is_refused(tmp_path: Path) -> None:
    cfg = SourceConfig.model_validate({"id": "cam", "uri": "x.mp4", "motion": {"preset": "shelf"}})
    assert cfg.motion.enabled
    with pytest.raises(ValueError, match="keepalive_s"):
        SourceConfig.model_validate({"id": "cam", "uri": "x.mp4", "motion": {"keepalive_s": 0}})
