"""TLS, credentials and per-device ACLs, proven with the real MqttPublisher against a real
mosquitto configured as docs/mqtt-security.md says (the ACL file is read from that page).

"Never connects" is shown without a timed assertion: the test waits until the broker's log
shows it refused the client at least twice (so the client did retry), then checks that the
publisher never got a CONNACK and nothing it sent arrived.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.config import (
    ENV_MQTT_PASSWORD,
    ConfigError,
    MqttConfig,
    TlsConfig,
    parse_config,
)
from edge_agent.publish.publisher import MqttPublisher
from edge_agent.types import Detections, Result
from tests.helpers.mqtt import Broker, Recorder, TlsListener
from tests.helpers.tls import Pki, make_pki
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "mqtt-security.md"
LOGGER = "edge_agent.publish.client"
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 0.3
WAIT_S = 10.0
#: The client logs in words why it cannot connect; these tests say what that should name.
WHY_NOT_LOGGED = (
    "client.py does not pass paho's TLS error (the exception being handled when on_connect_fail "
    "runs, the ERR log line of a failed read) into its warning"
)


# -- helpers -----------------------------------------------------------------------------------


def refused_twice(broker: Broker, text: str) -> bool:
    """The broker logged ``text`` twice: the client tried, was refused, and retried."""
    return wait_until(lambda: broker.log().count(text) >= 2)


def make_result(seq: int, source_id: str = "cam1") -> Result:
    det = Detections(
        xyxy=np.array([[10, 10, 50, 50]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([0], np.int32),
        tracker_id=None,
    )
    return Result(
        source_id=source_id,
        seq=seq,
        ts=1_790_000_000.0 + seq,
        model="m@1",
        task="detect",
        labels=["cola"],
        frame_size=(100, 100),
        predictions=det,
        counts={"cola": 1},
        timing_ms={"inference": 1.0},
    )


def results(recorder: Recorder, device: str) -> list[int]:
    """The seq of every result the recorder got from ``device``."""
    return [
        json.loads(m.payload)["seq"]
        for m in recorder.messages
        if m.topic == f"edgesight/{device}/cam1/result"
    ]


def protocol_of(cfg: MqttConfig) -> str:
    """ "5" or "3.1.1": the connection's MQTT version (3.1.1 before mqtt.protocol existed)."""
    return str(getattr(cfg, "protocol", "3.1.1"))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


def add_user(passwords: Path, user: str, password: str) -> None:
    create = [] if passwords.exists() else ["-c"]
    subprocess.run(
        ["mosquitto_passwd", "-b", *create, str(passwords), user, password],
        check=True,
        capture_output=True,
    )


def doc_acl() -> str:
    """The ACL file docs/mqtt-security.md gives (the block that starts with its path)."""
    blocks = re.findall(r"```text\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    (acl,) = [b for b in blocks if b.startswith("# /etc/mosquitto/acl")]
    return acl


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def running() -> Iterator[Callable[..., Broker]]:
    """Factory: ``running(workdir, **Broker options)`` -> a started broker, stopped at teardown."""
    made: list[Broker] = []

    def factory(workdir: Path, **options: Any) -> Broker:
        workdir.mkdir(parents=True, exist_ok=True)
        broker = Broker(workdir, **options)
        made.append(broker)
        broker.start()
        return broker

    yield factory
    for broker in made:
        broker.stop()


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """``closing(x)`` returns x and closes it at teardown (publishers, recorders)."""
    made: list[Any] = []

    def keep(thing: Any) -> Any:
        made.append(thing)
        return thing

    yield keep
    for thing in reversed(made):
        if isinstance(thing, MqttPublisher):
            thing.close(timeout_s=1.0)
        else:
            thing.close()


def publisher(
    broker: Broker, device: str, keep: Callable[[Any], Any], **mqtt_options: Any
) -> MqttPublisher:
    cfg = MqttConfig(
        host=broker.host,
        port=broker.port,
        reconnect_min_delay_s=RECONNECT_MIN_S,
        reconnect_max_delay_s=RECONNECT_MAX_S,
        **mqtt_options,
    )
    made: MqttPublisher = keep(MqttPublisher(cfg, device, "0.1.0", None, ["cam1"]))
    made.start()
    return made


def tls_broker(pki: Pki, running: Callable[..., Broker], tmp_path: Path, **kw: Any) -> Broker:
    server = kw.pop("server", pki.server)
    listener = TlsListener(pki.ca.cert_file, server.cert_file, server.key_file, **kw)
    return running(tmp_path / "broker", tls=listener)


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_with_the_test_ca_connects_and_publishes(
    pki: Pki, running: Callable[..., Broker], closing: Any, tmp_path: Path
) -> None:
    broker = tls_broker(pki, running, tmp_path)
    recorder = closing(Recorder(broker, "edgesight/#", False, ca_file=pki.ca.cert_file))
    device = publisher(broker, "devA", closing, tls=TlsConfig(ca_file=pki.ca.cert_file))
    assert wait_until(lambda: device.connected)
    device.publish_result(make_result(seq=1))
    assert recorder.wait_for(lambda: results(recorder, "devA") == [1])
    (status,) = recorder.json("edgesight/devA/status")
    assert status["state"] == "online"


def test_tls_with_the_wrong_ca_never_connects(
    pki: Pki, running: Callable[..., Broker], closing: Any, tmp_path: Path
) -> None:
    broker = tls_broker(pki, running, tmp_path)
    recorder = closing(Recorder(broker, "edgesight/#", False, ca_file=pki.ca.cert_file))
    device = publisher(broker, "devA", closing, tls=TlsConfig(ca_file=pki.other_ca.cert_file))
    device.publish_result(make_result(seq=1))  # queued in memory, never sent
    assert refused_twice(broker, "alert unknown ca"), broker.log()
    assert not device.connected and device.metrics.connects.value == 0
    assert recorder.messages == []


def test_a_broker_that_wants_a_client_certificate_refuses_a_client_without_one(
    pki: Pki, running: Callable[..., Broker], closing: Any, tmp_path: Path
) -> None:
    broker = tls_broker(pki, running, tmp_path, require_certificate=True)
    ca = pki.ca.cert_file
    client = pki.client
    recorder = closing(
        Recorder(
            broker,
            "edgesight/#",
            False,
            ca_file=ca,
            cert_file=client.cert_file,
            key_file=client.key_file,
        )
    )
    anonymous = publisher(broker, "devB", closing, tls=TlsConfig(ca_file=ca))
    assert refused_twice(broker, "peer did not return a certificate"), broker.log()
    assert not anonymous.connected and anonymous.metrics.connects.value == 0

    mutual = TlsConfig(ca_file=ca, cert_file=client.cert_file, key_file=client.key_file)
    device = publisher(broker, "devA", closing, tls=mutual)
    assert wait_until(lambda: device.connected)
    device.publish_result(make_result(seq=2))
    assert recorder.wait_for(lambda: results(recorder, "devA") == [2])
    assert not anonymous.connected and results(recorder, "devB") == []


def test_a_host_name_mismatch_is_refused_unless_insecure(
    pki: Pki, running: Callable[..., Broker], closing: Any, tmp_path: Path
) -> None:
    # The broker's certificate is for broker.example.net; the agent dials 127.0.0.1.
    broker = tls_broker(pki, running, tmp_path, server=pki.mismatched_server)
    ca = pki.ca.cert_file
    recorder = closing(Recorder(broker, "edgesight/#", False, ca_file=ca, insecure=True))
    strict = publisher(broker, "devB", closing, tls=TlsConfig(ca_file=ca))
    assert refused_twice(broker, "alert bad certificate"), broker.log()
    assert not strict.connected and strict.metrics.connects.value == 0

    lax = publisher(broker, "devA", closing, tls=TlsConfig(ca_file=ca, insecure=True))
    assert wait_until(lambda: lax.connected)
    lax.publish_result(make_result(seq=3))
    assert recorder.wait_for(lambda: results(recorder, "devA") == [3])
    assert results(recorder, "devB") == []


@pytest.mark.parametrize(
    ("case", "broker_log", "why"),
    [
        ("wrong CA", "alert unknown ca", "certificate verify failed"),
        ("no client certificate", "peer did not return a certificate", "certificate required"),
        ("host name mismatch", "alert bad certificate", "mismatch"),
    ],
)
def test_a_refused_tls_handshake_is_logged_with_its_cause(
    case: str,
    broker_log: str,
    why: str,
    pki: Pki,
    running: Callable[..., Broker],
    closing: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ca = pki.ca.cert_file
    if case == "wrong CA":
        broker, ca = tls_broker(pki, running, tmp_path), pki.other_ca.cert_file
    elif case == "no client certificate":
        broker = tls_broker(pki, running, tmp_path, require_certificate=True)
    else:
        broker = tls_broker(pki, running, tmp_path, server=pki.mismatched_server)
    publisher(broker, "devA", closing, tls=TlsConfig(ca_file=ca))
    assert refused_twice(broker, broker_log)
    (warning,) = warnings(caplog)  # one warning for the outage, not one per attempt
    assert why in warning.lower()


# -- user name and password --------------------------------------------------------------------

#: The agent config the credential tests load, as a user writes it (mqtt part filled in).
AGENT_YAML = """\
device_id: devA
model:
  bundle: bundle
sources:
  - id: cam1
    uri: clip.mp4
mqtt:
  host: 127.0.0.1
  port: {port}
  reconnect_min_delay_s: 0.1
  reconnect_max_delay_s: 0.3
  username: devA
{credentials}
"""


def agent_mqtt(tmp_path: Path, port: int, credentials: str) -> MqttConfig:
    """The mqtt section of an agent config file read the way the agent reads it."""
    text = AGENT_YAML.format(port=port, credentials=credentials)
    return parse_config(text, tmp_path / "agent.yaml").mqtt


@pytest.fixture
def password_broker(tmp_path: Path, running: Callable[..., Broker]) -> Broker:
    passwords = tmp_path / "passwd"
    add_user(passwords, "devA", "correct horse")
    return running(tmp_path / "broker", password_file=passwords)


@pytest.mark.parametrize("source", ["config", "environment", "password_file"])
def test_the_password_comes_from_config_environment_or_a_file(
    source: str,
    password_broker: Broker,
    closing: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("correct horse\n", encoding="utf-8")  # as `echo` writes it
    credentials = {
        "config": "  password: correct horse",
        "environment": "",
        "password_file": f"  password_file: {secret_file}",
    }[source]
    if source == "environment":
        monkeypatch.setenv(ENV_MQTT_PASSWORD, "correct horse")
    else:
        monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    cfg = agent_mqtt(tmp_path, password_broker.port, credentials)
    assert cfg.password == "correct horse"

    recorder = closing(
        Recorder(password_broker, "edgesight/#", False, username="devA", password="correct horse")
    )
    device = closing(MqttPublisher(cfg, "devA", "0.1.0", None, ["cam1"]))
    device.start()
    assert wait_until(lambda: device.connected)
    device.publish_result(make_result(seq=4))
    assert recorder.wait_for(lambda: results(recorder, "devA") == [4])


@pytest.mark.parametrize("source", ["config", "password_file"])
def test_a_wrong_password_is_refused_and_the_log_says_so(
    source: str,
    password_broker: Broker,
    closing: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("battery staple", encoding="utf-8")
    credentials = {
        "config": "  password: battery staple",
        "password_file": f"  password_file: {secret_file}",
    }[source]
    cfg = agent_mqtt(tmp_path, password_broker.port, credentials)
    recorder = closing(
        Recorder(password_broker, "edgesight/#", False, username="devA", password="correct horse")
    )
    device = closing(MqttPublisher(cfg, "devA", "0.1.0", None, ["cam1"]))
    device.start()
    device.publish_result(make_result(seq=5))
    assert refused_twice(password_broker, "not authorised"), password_broker.log()
    assert not device.connected and device.metrics.connects.value == 0
    assert recorder.messages == []
    # mosquitto 2.0.11 answers a wrong password with "Not authorized" under both protocols:
    # CONNACK 5 in 3.1.1, reason code 135 (not 134, "Bad user name or password") in MQTT 5.
    (warning,) = warnings(caplog)  # one warning for the outage, not one per attempt
    assert "Not authorized" in warning


# -- the password in the config file: refused with the line to fix ------------------------------


def config_issues(tmp_path: Path, credentials: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        agent_mqtt(tmp_path, 8883, credentials)
    return [str(issue) for issue in info.value.issues]


def test_password_and_password_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    secret_file = tmp_path / "pw"
    secret_file.write_text("x", encoding="utf-8")
    both = f"  password: x\n  password_file: {secret_file}"
    (issue,) = config_issues(tmp_path, both)
    assert "line 14: mqtt.password_file" in issue and "not both" in issue
    # The environment variable counts as mqtt.password: still one password, not two.
    monkeypatch.setenv(ENV_MQTT_PASSWORD, "y")
    (issue,) = config_issues(tmp_path, f"  password_file: {secret_file}")
    assert "mqtt.password_file" in issue and ENV_MQTT_PASSWORD in issue


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file or directory"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"one\ntwo\n", "holds 2 lines"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"x" * 65_536, "longer than an MQTT password can be"),
    ],
)
def test_a_bad_password_file_is_refused_at_its_line(
    content: bytes | None, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    secret_file = tmp_path / "pw"
    if content is not None:
        secret_file.write_bytes(content)
    (issue,) = config_issues(tmp_path, f"  password_file: {secret_file}")
    assert "line 13: mqtt.password_file" in issue and problem in issue
    assert str(secret_file) in issue


def test_a_relative_password_file_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "pw").write_text("the working folder's", encoding="utf-8")
    (tmp_path / "pw").write_text("beside the config\n", encoding="utf-8")
    assert agent_mqtt(tmp_path, 8883, "  password_file: pw").password == "beside the config"
    (tmp_path / "pw").unlink()
    (issue,) = config_issues(tmp_path, "  password_file: pw")
    assert "line 13: mqtt.password_file" in issue and str(tmp_path / "pw") in issue


def test_a_password_file_that_is_a_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    (issue,) = config_issues(tmp_path, f"  password_file: {tmp_path}")
    assert "mqtt.password_file" in issue and "not a regular file" in issue


def test_a_password_file_keeps_everything_but_the_final_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    secret_file = tmp_path / "pw"
    secret_file.write_bytes(b" p\xc3\xa4ss word \r\n")  # a Windows editor's line end
    cfg = agent_mqtt(tmp_path, 8883, f"  password_file: {secret_file}")
    assert cfg.password == " päss word "


def test_the_agent_config_in_the_docs_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MQTT_PASSWORD, raising=False)
    (block,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("s3cret\n", encoding="utf-8")
    text = block.replace("/etc/edgesight/mqtt-password", str(secret_file))
    text += "model:\n  bundle: bundle\nsources:\n  - id: cam1\n    uri: clip.mp4\n"
    cfg = parse_config(text, tmp_path / "agent.yaml")
    assert (cfg.mqtt.username, cfg.mqtt.password, cfg.mqtt.port) == ("shelf-cam-1", "s3cret", 8883)
    assert cfg.mqtt.tls is not None and not cfg.mqtt.tls.insecure
    assert cfg.device_id == cfg.mqtt.username  # what the ACL's %u needs


def test_a_password_without_a_user_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"mqtt\.password is set but mqtt\.username is not"):
        MqttConfig(password="x")


# -- per-device ACLs (the ACL file of docs/mqtt-security.md) -----------------------------------

USERS = {"devA": "pw-a", "devB": "pw-b", "homeassistant": "pw-ha"}


@pytest.fixture
def acl_broker(tmp_path: Path, running: Callable[..., Broker]) -> Broker:
    passwords = tmp_path / "passwd"
    for user, password in USERS.items():
        add_user(passwords, user, password)
    acl = tmp_path / "acl"
    acl.write_text(doc_acl(), encoding="utf-8")
    return running(tmp_path / "broker", password_file=passwords, acl_file=acl)


def as_user(broker: Broker, user: str, keep: Callable[[Any], Any], **kw: Any) -> Recorder:
    """A recorder logged in as ``user``, subscribed to every edgesight topic."""
    recorder: Recorder = keep(
        Recorder(broker, "edgesight/#", False, username=user, password=USERS[user], **kw)
    )
    return recorder


def puback(broker: Broker, user: str, topic: str, protocol: MQTTProtocolVersion) -> int:
    """The reason code of the broker's PUBACK for one QoS 1 publish by ``user`` to ``topic``."""
    codes: list[int] = []
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
    )
    client.username_pw_set(user, USERS[user])
    client.on_publish = lambda _c, _u, _mid, reason, _p: codes.append(reason.value)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, b"probe", qos=1).wait_for_publish(WAIT_S)
        assert wait_until(lambda: bool(codes)), f"no PUBACK for {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def test_a_device_reads_and_writes_only_its_own_topics(
    acl_broker: Broker, closing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen_by_a = as_user(acl_broker, "devA", closing)
    seen_by_b = as_user(acl_broker, "devB", closing)
    seen_by_ha = as_user(acl_broker, "homeassistant", closing)
    dev_b = publisher(acl_broker, "devB", closing, username="devB", password=USERS["devB"])
    assert wait_until(lambda: dev_b.connected)
    dev_b.publish_result(make_result(seq=10))
    assert seen_by_b.wait_for(lambda: results(seen_by_b, "devB") == [10])
    # Barrier: the broker handled devB's result before devA's, so had it been passed to devA's
    # subscriber it would have arrived there first.
    dev_a = publisher(acl_broker, "devA", closing, username="devA", password=USERS["devA"])
    assert wait_until(lambda: dev_a.connected)
    dev_a.publish_result(make_result(seq=20))
    assert seen_by_a.wait_for(lambda: results(seen_by_a, "devA") == [20])
    assert {m.topic.split("/")[1] for m in seen_by_a.messages} == {"devA"}
    assert seen_by_ha.wait_for(
        lambda: results(seen_by_ha, "devA") == [20] and results(seen_by_ha, "devB") == [10]
    )
    # mosquitto 2.0 grants the subscription and filters each message on delivery instead.
    assert not any(code.is_failure for code in seen_by_a.granted)

    # devA's agent configured with devB's device_id: it connects, and its messages vanish.
    dev_a.close(timeout_s=1.0)
    impostor = closing(
        MqttPublisher(
            MqttConfig(
                host=acl_broker.host,
                port=acl_broker.port,
                username="devA",
                password=USERS["devA"],
                client_id="edgesight-devA",
            ),
            "devB",
            "impostor",
            None,
            ["cam1"],
        )
    )
    impostor.start()
    assert wait_until(lambda: impostor.connected)
    impostor.publish_result(make_result(seq=99))
    denied = "Denied PUBLISH from edgesight-devA"
    assert wait_until(lambda: acl_broker.log().count(denied) >= 2)  # its status, its result
    dev_b.publish_result(make_result(seq=11))  # barrier, as above
    assert seen_by_b.wait_for(lambda: results(seen_by_b, "devB") == [10, 11])
    assert b"impostor" not in b"".join(m.payload for m in seen_by_b.messages)
    # Under MQTT 3.1.1 the broker acknowledges what it dropped: the agent cannot tell.
    if protocol_of(impostor.client.cfg) == "3.1.1":
        assert impostor.metrics.dropped.value == 0


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        ("devA", "edgesight/devA/cam1/result", True),
        ("devA", "edgesight/devB/cam1/result", False),
        ("devA", "homeassistant/device/devA/config", True),
        ("devA", "homeassistant/device/devB/config", False),
        ("devA", "edgesight/fleet/shop/desired", False),  # read only
        ("homeassistant", "homeassistant/status", True),
        ("homeassistant", "edgesight/devA/cmd/restart", False),  # reads, never commands
    ],
)
def test_the_acl_answers_mqtt5_publishes_with_not_authorized(
    acl_broker: Broker, user: str, topic: str, allowed: bool
) -> None:
    # MQTT 5 PUBACK: below 128 accepted (0 success, 16 "No matching subscribers"), 135
    # "Not authorized". MQTT 3.1.1 has no code for it: every PUBACK reads as success.
    code = puback(acl_broker, user, topic, mqtt.MQTTv5)
    assert code < 128 if allowed else code == 135
    assert puback(acl_broker, user, topic, mqtt.MQTTv311) == 0
