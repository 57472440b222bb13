"""Config: YAML errors located by path and line; env overrides; check-config exit codes."""

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field, ValidationError

from edge_agent.cli import main
from edge_agent.config import ENV_MQTT_PASSWORD, ConfigError, load_config, parse_config
from edge_agent.config.base import Section
from edge_agent.config.errors import validation_issues
from tools.toy_models import colour_blocks_bundle

GOOD = """\
device_id: shelf-cam-1
model:
  bundle: bundle
  threads: 1
sources:
  - id: aisle3
    uri: clip.mp4
    fps_limit: 5
mqtt:
  host: broker.local
  port: 8883
  username: agent
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/etc/edgesight/agent.yaml"))
    return [str(i) for i in info.value.issues]


def test_good_config_resolves_paths_relative_to_the_file():
    cfg = parse_config(GOOD, Path("/etc/edgesight/agent.yaml"))
    assert cfg.model.bundle == Path("/etc/edgesight/bundle")
    assert cfg.sources[0].uri == "/etc/edgesight/clip.mp4"
    assert cfg.mqtt.port == 8883 and cfg.device_id == "shelf-cam-1"


def test_malformed_yaml_names_the_line():
    (issue,) = issues_of("model:\n  bundle: [a, b\nsources: []\n")
    assert "invalid YAML" in issue and issue.startswith("line 3")


def test_unknown_key_names_path_and_line():
    text = GOOD.replace("  threads: 1\n", "  threads: 1\n  thread_count: 2\n")
    assert issues_of(text) == ["line 5: model.thread_count: unknown key (did you mean 'threads'?)"]


@pytest.mark.parametrize(
    ("old", "new", "issue"),
    [
        (
            "  port: 8883\n",
            "  port: 8883\n  keepalive: 60\n",
            "line 12: mqtt.keepalive: unknown key (did you mean 'keepalive_s'?)",
        ),
        (
            "    fps_limit: 5\n",
            "    fps_limit: 5\n    fps_limt: 5\n",
            "line 9: sources[0].fps_limt: unknown key (did you mean 'fps_limit'?)",
        ),
        (
            "  username: agent\n",
            "  username: agent\n  tls: {cafile: ca.pem}\n",
            "line 13: mqtt.tls.cafile: unknown key (did you mean 'ca_file'?)",
        ),
    ],
)
def test_unknown_key_suggests_the_nearest_known_one(old, new, issue):
    assert issues_of(GOOD.replace(old, new)) == [issue]


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    (issue,) = issues_of(GOOD.replace("  port: 8883\n", "  port: 8883\n  zzz: 1\n"))
    assert issue.startswith("line 12: mqtt.zzz: unknown key; expected one of ['host', 'port'")
    assert "'keepalive_s'" in issue


def test_wrong_type_names_path_line_and_value():
    (issue,) = issues_of(GOOD.replace("fps_limit: 5", "fps_limit: fast"))
    assert issue.startswith("line 8: sources[0].fps_limit: ") and "'fast'" in issue


def test_every_problem_is_reported():
    text = GOOD.replace("port: 8883", "port: 70000").replace("id: aisle3", "id: aisle 3")
    found = issues_of(text)
    assert len(found) == 2
    assert any(i.startswith("line 6: sources[0].id") for i in found)
    assert any(i.startswith("line 11: mqtt.port") for i in found)


def test_missing_sections_and_empty_file():
    assert issues_of("device_id: x\n") == [
        "line 1: model: required field is missing",
        "line 1: sources: required field is missing",
    ]
    assert "empty file" in issues_of("")[0]
    assert "expected a mapping" in issues_of("- a\n- b\n")[0]


def test_duplicate_source_ids_refused():
    text = GOOD + "  - id: aisle3\n    uri: other.mp4\n"
    text = text.replace("mqtt:\n  host: broker.local\n  port: 8883\n  username: agent\n", "")
    assert any("aisle3" in i and "unique" in i for i in issues_of(text))


def test_ids_reserved_in_topics_refused_with_their_line():
    text = GOOD.replace("device_id: shelf-cam-1", "device_id: fleet")
    text = text.replace("id: aisle3", "id: cmd")
    found = issues_of(text)
    assert any("line 1" in i and "device_id" in i and "'fleet' is reserved" in i for i in found)
    assert any("line 6" in i and "sources[0].id" in i and "'cmd' is reserved" in i for i in found)


def test_password_from_environment(monkeypatch):
    monkeypatch.setenv(ENV_MQTT_PASSWORD, "s3cret")
    cfg = parse_config(GOOD, Path("agent.yaml"))
    assert cfg.mqtt.password == "s3cret"


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "nope.yaml")


def test_check_config_cli(tmp_path, capsys):
    colour_blocks_bundle(tmp_path / "bundle")
    (tmp_path / "clip.mp4").write_bytes(b"")  # check-config checks it can be read, not decoded
    good = tmp_path / "agent.yaml"
    good.write_text(GOOD)
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "colour-blocks@1" in out and "aisle3" in out
    assert "stages: counts)" in out and f"bundle   {tmp_path / 'bundle'}" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("threads: 1", "threads: many"))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 4: model.threads" in err

    missing_bundle = tmp_path / "nobundle.yaml"
    missing_bundle.write_text(GOOD.replace("bundle: bundle", "bundle: nothere"))
    assert main(["check-config", str(missing_bundle)]) == 2
    assert "nothere" in capsys.readouterr().err


def test_runtime_options_belong_to_their_runtime():
    text = GOOD.replace(
        "  threads: 1\n", "  threads: 1\n  onnx:\n    provider: [CPUExecutionProvider]\n"
    )
    assert issues_of(text) == [
        "line 6: model.onnx.provider: unknown key (did you mean 'providers'?)"
    ]
    cfg = parse_config(
        GOOD.replace("  threads: 1\n", "  threads: 1\n  onnx: {graph_optimization: basic}\n"),
        Path("/etc/edgesight/agent.yaml"),
    )
    assert cfg.model.options_for("onnx").graph_optimization == "basic"  # type: ignore[attr-defined]
    assert cfg.model.options_for("tflite").edgetpu is False  # type: ignore[attr-defined]


def test_old_flat_runtime_keys_name_their_new_place():
    text = GOOD.replace("  threads: 1\n", "  threads: 1\n  edgetpu: true\n")
    assert issues_of(text) == ["line 2: model: edgetpu is now model.tflite.edgetpu"]


def test_stages_default_to_counting_and_are_checked_by_the_registry():
    cfg = parse_config(GOOD, Path("/etc/edgesight/agent.yaml"))
    assert [s.type for s in cfg.sources[0].stages] == ["counts"]
    text = GOOD.replace(
        "    fps_limit: 5\n",
        "    fps_limit: 5\n    stages:\n"
        "      - type: counts\n        every: 2\n"
        "      - type: trakcer\n",
    )
    problems = issues_of(text)
    assert problems[0] == "line 11: sources[0].stages[0].every: unknown key; this takes no keys"
    assert problems[1].startswith("line 12: sources[0].stages[1]: ")
    assert "unknown stage type 'trakcer' (did you mean 'track'?); choose one of [" in problems[1]
    assert "'counts'" in problems[1]


class _Cat(Section):
    kind: Literal["cat"]
    lives: int = 9


class _Dog(Section):
    kind: Literal["dog"]
    good_boy: bool = True


class _Pets(Section):
    pets: list[Annotated[_Cat | _Dog, Field(discriminator="kind")]]
    names: dict[str, _Cat] = Field(default_factory=dict)


@pytest.mark.parametrize(
    ("data", "issue"),
    [
        (
            {"pets": [{"kind": "cat"}, {"kind": "dog", "good_by": False}]},
            "pets[1].good_by: unknown key (did you mean 'good_boy'?)",
        ),
        ({"pets": [], "names": {"tom": {"kind": "cat", "live": 8}}}, "names.tom.live: "),
        ({"pets": [{"kind": "cta"}]}, "pets[0].kind: unknown kind 'cta' (did you mean 'cat'?)"),
        ({"pets": [], "pet": 1}, "pet: unknown key (did you mean 'pets'?)"),
    ],
)
def test_suggestions_follow_lists_dicts_and_discriminated_unions(data, issue):
    with pytest.raises(ValidationError) as info:
        _Pets.model_validate(data)
    (found,) = [str(i) for i in validation_issues(info.value, model=_Pets)]
    assert found.startswith(issue)


def test_without_the_model_unknown_keys_are_still_named():
    with pytest.raises(ValidationError) as info:
        _Pets.model_validate({"pets": [], "pet": 1})
    assert [str(i) for i in validation_issues(info.value)] == ["pet: unknown key"]
