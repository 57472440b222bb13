"""Stages in the config: their order, the labels they name (checked against the model, with the
YAML line), strict option types, and the state folder they keep things in."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.bundle import BundleError
from edge_agent.cli import main
from edge_agent.config import ConfigError, parse_config
from edge_agent.config.agent import ENV_STATE_DIRECTORY, default_state_dir
from edge_agent.pipeline import Agent
from tools.toy_models import colour_blocks_bundle

CONFIG = """\
device_id: shelf-cam-1
model:
  bundle: bundle
sources:
  - id: aisle3
    uri: clip.mp4
    stages:
      - type: counts
      - type: slots
        slots:
          - name: top
            polygon: [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
            label: red
            capacity: 4
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/etc/edgesight/agent.yaml"))
    return [str(i) for i in info.value.issues]


def test_a_label_the_model_lacks_is_named_with_its_line(tmp_path: Path, capsys) -> None:
    colour_blocks_bundle(tmp_path / "bundle")  # labels red, green, blue
    (tmp_path / "clip.mp4").write_bytes(b"")
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.replace("label: red", "label: rde"))
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "line 13: sources[0].stages[1].slots[0].label: label 'rde' is not one of the " in err
    assert "(did you mean 'red'?)" in err and "['red', 'green', 'blue']" in err
    config.write_text(CONFIG)
    assert main(["check-config", str(config)]) == 0
    assert "stages: counts -> slots)" in capsys.readouterr().out


def test_the_agent_refuses_to_start_with_a_label_the_model_lacks(tmp_path: Path) -> None:
    colour_blocks_bundle(tmp_path / "bundle")
    (tmp_path / "clip.mp4").write_bytes(b"")
    text = CONFIG.replace("label: red", "label: cola")
    cfg = parse_config(text + f"state_dir: {tmp_path / 'state'}\n", tmp_path / "agent.yaml")
    agent = Agent(cfg, publish=False)
    with pytest.raises(BundleError, match=r"sources\[0\]\.stages\[1\]\.slots\[0\]\.label"):
        agent.start()
    agent.close()


def test_stage_options_are_strict_like_the_rest_of_the_config() -> None:
    (issue,) = issues_of(CONFIG.replace("capacity: 4", "capacity: '4'"))
    assert issue == (
        "line 14: sources[0].stages[1].slots[0].capacity: Input should be a valid integer (got '4')"
    )
    (issue,) = issues_of(CONFIG + "      - type: track\n        lost_s: 'soon'\n")
    assert issue.startswith("line 16: sources[0].stages[2].lost_s: ")


def test_state_dir_comes_from_systemd_else_the_user_state_folder(monkeypatch) -> None:
    monkeypatch.setenv(ENV_STATE_DIRECTORY, "/var/lib/edgesight:/var/lib/other")
    assert default_state_dir() == Path("/var/lib/edgesight")
    monkeypatch.delenv(ENV_STATE_DIRECTORY)
    monkeypatch.setenv("XDG_STATE_HOME", "/home/pi/.state")
    assert default_state_dir() == Path("/home/pi/.state/edgesight")
    cfg = parse_config(CONFIG + "state_dir: state\n", Path("/etc/edgesight/agent.yaml"))
    assert cfg.state_dir == Path("/etc/edgesight/state")  # relative to the config file
    (issue,) = issues_of(CONFIG + "state_dir: ''\n")
    assert issue.startswith("line 15: state_dir: ") and "must not be empty" in issue


TRACKED = CONFIG.replace(
    "      - type: counts\n",
    "      - type: counts\n      - type: track\n        lost_s: 3\n",
)


def test_a_stage_that_needs_tracks_needs_a_track_stage_before_it() -> None:
    zones = "      - type: zones\n        zones:\n          - name: door\n"
    zones += "            polygon: [[0, 0], [1, 0], [1, 1]]\n"
    (issue,) = issues_of(CONFIG + zones)
    assert issue.startswith("line 5: sources[0]: ")
    assert "stage 'zones' needs a 'track' stage before it in the same source" in issue
    parse_config(TRACKED + zones + "        lost_s: 3\n", Path("/etc/edgesight/agent.yaml"))


def test_names_are_unique_across_stages_and_zones_remember_tracks_as_long_as_the_tracker():
    zone = (
        "      - type: zones\n        lost_s: {lost}\n        zones:\n          - name: door\n"
        "            polygon: [[0, 0], [1, 0], [1, 1]]\n"
    )
    (issue,) = issues_of(TRACKED + zone.format(lost=3) + zone.format(lost=3))
    assert "zones names must be unique in a source, but ['door'] appear more than once" in issue
    (issue,) = issues_of(TRACKED + zone.format(lost=1))
    assert "zones.lost_s (1 s) must be at least track.lost_s (3 s)" in issue


def test_a_stage_that_cannot_work_on_its_source_is_named_by_check_config(tmp_path: Path, capsys):
    colour_blocks_bundle(tmp_path / "bundle")
    (tmp_path / "clip.mp4").write_bytes(b"")
    config = tmp_path / "agent.yaml"
    config.write_text(TRACKED + "      - type: events\n        export: true\n")
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "line 17: sources[0].stages[3]: events: export: true needs an image folder" in err
    assert "but this source is a file" in err


def test_a_source_has_one_tracker_and_one_snapshot_stage() -> None:
    (issue,) = issues_of(TRACKED + "      - type: track\n")
    assert "a source may have one 'track' stage, but this one has 2" in issue
    (issue,) = issues_of(CONFIG + "      - type: snapshot\n      - type: snapshot\n")
    assert "a source may have one 'snapshot' stage, but this one has 2" in issue


def test_two_sources_may_not_share_an_export_folder() -> None:
    events = "      - type: track\n      - type: events\n        export_dir: /srv/exports/{}\n"
    second = "  - id: gate\n    uri: gate.mp4\n    stages:\n" + events.format("a")
    (issue,) = issues_of(CONFIG + events.format("a/.") + second)
    assert "sources 'aisle3' and 'gate' both write exports to /srv/exports/a" in issue
    parse_config(CONFIG + events.format("b") + second, Path("/etc/edgesight/agent.yaml"))


def test_the_agent_refuses_exports_on_a_source_that_is_not_a_folder(tmp_path: Path) -> None:
    from edge_agent.sources import SourceError

    colour_blocks_bundle(tmp_path / "bundle")
    (tmp_path / "clip.mp4").write_bytes(b"")
    text = TRACKED + "      - type: events\n        export: true\n"
    cfg = parse_config(text + f"state_dir: {tmp_path / 'state'}\n", tmp_path / "agent.yaml")
    agent = Agent(cfg, publish=False)
    with pytest.raises(SourceError, match=r"sources\[0\]\.stages\[3\]: events: export: true"):
        agent.start()
    agent.close()
