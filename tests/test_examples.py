"""The example configs in examples/ as a user meets them: both load with the real config loader
(relative paths read against the file), `edge-agent check-config` accepts them, the camera-trap
walkthrough in the README runs exactly as written there and produces a valid Camtrap DP
package, and the shelf example's slots hold what the demo detector finds in the demo scene."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge_agent.bundle import load_bundle
from edge_agent.config.loader import read_config
from edge_agent.geometry import points_in_polygon
from edge_agent.predictor import Predictor
from edge_agent.types import Detections
from tests.helpers.camtrap_dp import rows, validate_package

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DOC = REPO / "README.md"
BIN = Path(sys.executable).parent
AGENT = str(BIN / "edge-agent")
DEMO = REPO / "edge_agent" / "demo"
#: The walkthrough runs the toy model on 9 pictures: seconds, not minutes.
WALKTHROUGH_TIMEOUT_S = 120


def doc_block(heading: str) -> str:
    """The first ```sh block under ``heading`` in the README, as a user would copy it."""
    text = DOC.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^( *)```sh\n(.*?)\n *```", section, re.S | re.M)
    assert match, f"no sh block under '## {heading}' in {DOC}"
    return textwrap.dedent(match.group(2))


def example(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", ["camera-trap.yaml", "shelf.yaml"])
def test_examples_load_with_paths_relative_to_the_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded from another working directory, every relative path still points next to the
    file (so the walkthroughs work from anywhere)."""
    monkeypatch.chdir(tmp_path)
    config = read_config(EXAMPLES / name).config
    assert Path(config.model.bundle).is_absolute()
    assert Path(config.model.bundle).resolve().is_relative_to(REPO)
    assert config.mqtt.outbox.max_bytes >= 256 * 1024**2  # never below the default


def test_camera_trap_example_is_built_for_long_offline_periods() -> None:
    config = read_config(EXAMPLES / "camera-trap.yaml").config
    assert config.mqtt.outbox.max_age_s >= 30 * 86400
    assert config.mqtt.outbox.max_bytes >= 1024**3
    (source,) = config.sources
    assert source.on_eof == "stop"
    assert [stage.type for stage in source.stages] == ["counts", "track", "events", "snapshot"]


def test_camera_trap_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's camera-trap block, verbatim, from a folder where `examples/` and `tools/`
    are the repository's: the agent reads the generated bursts, exits 0, and the events stage
    writes a Camtrap DP package that the standard's validator accepts."""
    (tmp_path / "examples").symlink_to(EXAMPLES)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(PYTHONPATH=str(REPO), TZ="UTC")  # EXIF times carry no offset: read them in UTC
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_block("Examples and containers")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=WALKTHROUGH_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert "trap/agent.yaml: OK" in done.stdout
    assert "stages: counts -> track -> events -> snapshot" in done.stdout
    listed = done.stdout.split()
    for name in ("datapackage.json", "deployments.csv", "media.csv", "observations.csv"):
        assert name in listed

    exports = tmp_path / "trap" / "state" / "sources" / "oak-ridge" / "exports"
    package = exports / "camtrap-dp"
    descriptor = validate_package(package)
    assert descriptor["spatial"]["coordinates"] == [23.84995, 52.70442]
    assert len(rows(package, "media")) == 9
    events = [r for r in rows(package, "observations") if r["observationLevel"] == "event"]
    seen = sorted((r["eventID"], r["observationTags"].split(" | ")[0], r["count"]) for r in events)
    assert seen == [
        ("oak-ridge-20240501T060000.000Z", "label:red", "1"),
        ("oak-ridge-20240501T061000.000Z", "label:blue", "1"),
        ("oak-ridge-20240501T061000.000Z", "label:red", "1"),
    ]
    megadetector = json.loads((exports / "megadetector.json").read_text())
    boxes = [len(image["detections"]) for image in megadetector["images"]]
    assert boxes == [1, 1, 1, 2, 2, 2, 0, 0, 0]
    snapshots = tmp_path / "trap" / "state" / "sources" / "oak-ridge" / "snapshots"
    assert len(list(snapshots.glob("*.jpg"))) == 3  # one per event


def test_shelf_example_passes_check_config_with_the_demo_bundle() -> None:
    done = subprocess.run(
        [AGENT, "check-config", str(EXAMPLES / "shelf.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shelf.yaml: OK" in done.stdout
    assert "shelf-demo@1" in done.stdout
    assert "stages: counts -> slots -> snapshot" in done.stdout


def test_shelf_walkthrough_command_is_the_tested_one() -> None:
    """The README's shelf block is the check-config run tested below (the camera cannot be)."""
    section = DOC.read_text().split("## Examples and containers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)\n```", section, re.S | re.M)
    assert blocks[1].strip() == "edge-agent check-config examples/shelf.yaml"


def shelf_slots() -> list[dict[str, Any]]:
    (source,) = example("shelf.yaml")["sources"]
    (stage,) = [s for s in source["stages"] if s["type"] == "slots"]
    slots: list[dict[str, Any]] = stage["slots"]
    return slots


def in_slot(centres: np.ndarray, labels: list[str], slot: dict[str, Any], size: int) -> int:
    mine = np.array([label == slot["label"] for label in labels], bool)
    if not mine.any():
        return 0
    polygon = np.array(slot["polygon"], np.float64) * size
    return int(points_in_polygon(centres[mine], polygon).sum())


def test_shelf_slots_hold_their_capacity_in_the_demo_scene() -> None:
    """Each slot's label is the demo model's, and in the demo shelf picture the slot holds
    exactly `capacity` items of it by the scene's true boxes; the demo detector finds every one
    of them, and at most one more (it doubles one bottle of the middle shelf at 0.45)."""
    manifest = json.loads((DEMO / "shelf_bundle" / "manifest.json").read_text())
    scene = json.loads((DEMO / "assets" / "shelf.json").read_text())
    size = scene["source"]["size"][0]
    slots = shelf_slots()
    assert {slot["label"] for slot in slots} <= set(manifest["labels"])

    truth = np.array([b["xyxy"] for b in scene["boxes"]], np.float64)
    truth_centres = (truth[:, :2] + truth[:, 2:]) / 2
    truth_labels = [b["label"] for b in scene["boxes"]]
    picture = cv2.imread(str(DEMO / "assets" / scene["scene"]))
    assert picture is not None and picture.shape[:2] == (size, size)
    found = Predictor(load_bundle(DEMO / "shelf_bundle"), "onnx", threads=1)
    det = found.predict(picture).predictions
    assert isinstance(det, Detections)
    det_centres = (det.xyxy[:, :2] + det.xyxy[:, 2:]) / 2
    det_labels = [manifest["labels"][c] for c in det.class_id.tolist()]

    by_truth = {s["name"]: in_slot(truth_centres, truth_labels, s, size) for s in slots}
    by_model = {s["name"]: in_slot(det_centres, det_labels, s, size) for s in slots}
    capacity = {s["name"]: s["capacity"] for s in slots}
    assert by_truth == capacity
    assert all(capacity[n] <= by_model[n] <= capacity[n] + 1 for n in capacity), by_model
    assert sum(by_model.values()) - sum(capacity.values()) <= 1, by_model
