"""The field loop end to end on synthetic clips: the real agent with a ``collect`` stage on two
"devices" (the toy colour-blocks detector, clips whose boxes and scores are known), then
``edge-trainer import-field``, then the trainer reads the set (``inspect``; a one-epoch train
with EDGESIGHT_SLOW_TESTS=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.config import AgentConfig, ModelConfig, SourceConfig
from edge_agent.config.sources import StageConfig
from edge_agent.pipeline import Agent
from tools.toy_models import colour_blocks_bundle
from trainer.cli import main
from trainer.datasets import load

SLOW = os.environ.get("EDGESIGHT_SLOW_TESTS") == "1"
W, H = 640, 480
#: A block the toy detector scores 140/255 = 0.55 (red minus green minus blue): above the
#: bundle's 0.5 threshold, inside the default band [0.3, 0.6]; full blue scores 1.
DIM_RED = (0, 0, 140)
BLUE = (255, 0, 0)
BLOCK_W, BLOCK_H = 128, 96  # one model window (32 px of the 160 px input)
BLUE_AT = (512, 384)


def scene(row: int, xs: list[int], shade: int, mirrored: bool = False) -> list[np.ndarray]:
    """Frames of a lit background (``shade``, light from the left or ``mirrored``) with a
    full blue block (sure, outside the band) and a dim red block (unsure) at ``(x, row)`` for
    each x."""
    ys, gx = np.mgrid[0:H, 0:W]
    background = (shade + 0.1 * gx + 0.05 * ys).clip(0, 255).astype(np.uint8)
    background = background[:, ::-1] if mirrored else background
    frames = []
    for x in xs:
        img = np.repeat(background[..., None], 3, axis=2)
        img[row : row + BLOCK_H, x : x + BLOCK_W] = DIM_RED
        bx, by = BLUE_AT
        img[by : by + BLOCK_H, bx : bx + BLOCK_W] = BLUE
        frames.append(img)
    return frames


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """Lossless (FFV1), so the toy detector's scores are the drawn colours'."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (W, H))
    for img in frames:
        writer.write(img)
    writer.release()
    return path


def run_device(
    tmp_path: Path, device: str, clip: Path, bundle: Path, sample_rate: float = 0.0
) -> Path:
    """``edge-agent run`` in this process: one source with counts and collect; its state_dir."""
    state = tmp_path / device
    stages = [
        {"type": "counts"},
        {"type": "collect", "sample_rate": sample_rate, "min_interval_s": 0, "seed": 1},
    ]
    cfg = AgentConfig(
        device_id=device,
        model=ModelConfig(bundle=bundle, threads=1),
        sources=[
            SourceConfig.model_validate(
                {
                    "id": "cam",
                    "uri": str(clip),
                    "stages": [StageConfig.model_validate(s) for s in stages],
                }
            )
        ],
        state_dir=state,
    )
    with Agent(cfg, publish=False) as agent:
        agent.wait()
    return state


def test_device_to_training_set(tmp_path: Path, capsys) -> None:
    bundle = colour_blocks_bundle(tmp_path / "bundle")
    xs = [0, 128, 256, 384, 512]
    seen_by_a = scene(96, xs, 40)
    # device b sees another scene, then exactly what device a saw first
    seen_by_b = [*scene(192, xs[:3], 90, mirrored=True), seen_by_a[0]]
    state_a = run_device(tmp_path, "pi-a", write_clip(tmp_path / "a.avi", seen_by_a), bundle)
    state_b = run_device(tmp_path, "pi-b", write_clip(tmp_path / "b.avi", seen_by_b), bundle)

    field_a = json.loads((state_a / "sources/cam/field/annotations/instances_default.json")
                         .read_text())  # fmt: skip
    assert len(field_a["images"]) == len(xs)
    for image in field_a["images"]:
        assert image["reasons"] == ["band"] and image["device"] == "pi-a"
        assert image["model"].startswith("colour-blocks")
    red = [a for a in field_a["annotations"] if a["category_id"] == 1]
    blue = [a for a in field_a["annotations"] if a["category_id"] == 3]
    assert len(red) == len(blue) == len(xs)  # every box kept as a pre-label, sure or not
    assert all(abs(a["score"] - 140 / 255) < 0.02 for a in red)
    assert [a["bbox"] for a in red] == [[x, 96, BLOCK_W, BLOCK_H] for x in xs]

    out = tmp_path / "train-set"
    assert (
        main(["import-field", str(out), str(state_a), str(state_b), "--val-fraction", "0.25"]) == 0
    )
    printed = capsys.readouterr().out
    # each frame is a new view but device b's copy of a's first one
    assert "pi-a/sources/cam/field: 5 images, 0 near-duplicates dropped" in printed
    assert "pi-b/sources/cam/field: 4 images, 1 near-duplicates dropped" in printed
    dataset = load(out, "coco")
    assert dataset.classes == ["red", "green", "blue"]
    pictures = len(dataset.samples)
    assert pictures == len(seen_by_a) + len(seen_by_b) - 1
    assert {s.split for s in dataset.samples} == {"train", "val"}
    assert main(["inspect", str(out)]) == 0
    assert f"images:  {pictures} " in capsys.readouterr().out

    if not SLOW:
        return
    pytest.importorskip("torch")
    run = tmp_path / "run"
    argv = ["train", "--task", "detect", "--model", "ssdlite320_mobilenet_v3_large",
            "--data", str(out), "--epochs", "1", "--out", str(run), "--size", "160",
            "--batch", "4", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    # export, then the device runs the new model (push and update_model: tests/test_fleet*.py)
    bundle2 = tmp_path / "bundle-2"
    argv = ["export", str(run), "--out", str(bundle2), "--name", "field", "--model-version", "2",
            "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    state = run_device(tmp_path, "pi-a", write_clip(tmp_path / "c.avi", seen_by_a), bundle2, 1.0)
    doc = json.loads((state / "sources/cam/field/annotations/instances_default.json").read_text())
    newer = doc["images"][len(xs) :]  # the set continues: the first model's frames, then these
    assert len(newer) == len(xs) and all("sample" in i["reasons"] for i in newer)
    assert {i["model"] for i in newer} != {i["model"] for i in doc["images"][: len(xs)]}
