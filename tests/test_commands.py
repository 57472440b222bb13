"""MQTT commands: parsing, argument checks, replies, signed commands and their replay state."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.bundle.signing import fingerprint, public_key_base64
from edge_agent.publish.command_auth import CommandAuth, sign_command
from edge_agent.publish.commands import (
    COMMAND_ARGS,
    CommandRefused,
    CommandRouter,
    Incoming,
    Reply,
    SetThresholdArgs,
    SnapshotArgs,
)
from edge_agent.publish.inbound import incoming_from_paho
from edge_agent.publish.redact import redact
from tests.helpers.mqtt import Broker

PREFIX = "edgesight"
DEVICE = "shelf-01"
NOW = 1_800_000_000.0
REPLY_PING = f"{PREFIX}/{DEVICE}/cmd/ping/reply"
ERROR_CODES = {
    "too_large", "not_utf8", "bad_json", "duplicate_key", "not_finite", "not_object",
    "bad_request", "unknown_command", "bad_args", "unsigned", "bad_envelope", "bad_signature",
    "wrong_device", "wrong_command", "expired", "replayed", "auth_unavailable", "refused", "failed",
}  # fmt: skip


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def recording_handlers(calls: list[tuple[str, Any]]) -> dict[str, Callable[[Any], dict[str, Any]]]:
    """A handler per command that records its arguments and answers with them."""

    def make(name: str) -> Callable[[Any], dict[str, Any]]:
        def handler(args: Any) -> dict[str, Any]:
            calls.append((name, args))
            return {"echo": args.model_dump()}

        return handler

    return {name: make(name) for name in COMMAND_ARGS}


def make_router(
    calls: list[tuple[str, Any]] | None = None,
    handlers: dict[str, Callable[[Any], Any]] | None = None,
    **kwargs: Any,
) -> CommandRouter:
    if handlers is None:
        handlers = recording_handlers([] if calls is None else calls)
    kwargs.setdefault("clock", Clock())
    return CommandRouter(PREFIX, DEVICE, handlers, **kwargs)


def incoming(name: str = "ping", payload: bytes | dict[str, Any] = b"", **fields: Any) -> Incoming:
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    values: dict[str, Any] = {"retained": False, "response_topic": None, "correlation": None,
                              "received": NOW, "expiry_s": None} | fields  # fmt: skip
    return Incoming(name=name, payload=payload, **values)


def answer(router: CommandRouter, msg: Incoming) -> dict[str, Any]:
    reply = router.handle(msg)
    assert isinstance(reply, Reply)
    body = json.loads(reply.payload)
    assert isinstance(body, dict)
    return body


# --- success and the reply envelope -------------------------------------------------------------


def test_ping_replies_on_the_reply_topic_with_the_envelope() -> None:
    calls: list[tuple[str, Any]] = []
    reply = make_router(calls).handle(incoming("ping", b""))
    assert reply == Reply(
        topic=REPLY_PING,
        payload=b'{"ok":true,"command":"ping","result":{"echo":{}},"ts":1800000000.0}',
        correlation=None,
    )
    assert [name for name, _ in calls] == ["ping"]


def test_mqtt5_response_topic_and_correlation_are_used_and_the_id_echoed() -> None:
    msg = incoming("get_stats", {"id": "r-17"}, response_topic="ops/replies/7", correlation=b"\x01")
    reply = make_router().handle(msg)
    assert reply is not None
    assert (reply.topic, reply.correlation) == ("ops/replies/7", b"\x01")
    assert json.loads(reply.payload)["id"] == "r-17"


@pytest.mark.parametrize(
    ("response_topic", "why"),
    [
        ("ops/+/replies", "a wildcard cannot be published to"),
        ("ops/#", "a wildcard cannot be published to"),
        (f"{PREFIX}/{DEVICE}/cmd/ping", "the reply would come back as a command"),
        (f"{PREFIX}/{DEVICE}/cmd/get_config", "the reply would come back as a command"),
        ("", "an empty topic is not a topic"),
    ],
)
def test_an_unusable_response_topic_falls_back_to_the_reply_topic(
    response_topic: str, why: str
) -> None:
    reply = make_router().handle(incoming("ping", response_topic=response_topic))
    assert reply is not None and reply.topic == REPLY_PING, why


def test_the_device_own_reply_topic_is_a_usable_response_topic() -> None:
    reply = make_router().handle(incoming("ping", response_topic=f"{REPLY_PING}/x"))
    assert reply is not None and reply.topic == f"{REPLY_PING}/x"


def test_set_threshold_hands_the_handler_a_typed_model() -> None:
    calls: list[tuple[str, Any]] = []
    router = make_router(calls)
    assert answer(router, incoming("set_threshold", {"score": 0.35, "label": "cola"}))["ok"]
    assert answer(router, incoming("set_threshold", {"score": 1}))["ok"]  # an integer is a number
    assert answer(router, incoming("snapshot", {"source": "cam1"}))["ok"]
    assert [args for _, args in calls] == [
        SetThresholdArgs(score=0.35, label="cola"),
        SetThresholdArgs(score=1.0),
        SnapshotArgs(source="cam1"),
    ]


def test_retained_and_expired_commands_are_ignored() -> None:
    calls: list[tuple[str, Any]] = []
    clock = Clock()
    router = make_router(calls, clock=clock)
    assert router.handle(incoming("ping", retained=True)) is None
    assert router.handle(incoming("ping", expiry_s=0)) is None
    clock.t = NOW + 10  # waited in a queue past its expiry
    assert router.handle(incoming("ping", expiry_s=5)) is None
    assert calls == []
    assert answer(router, incoming("ping", expiry_s=30))["ok"]
    assert router.counts == {"ignored_retained": 1, "ignored_expired": 2, "ok": 1}


# --- every refusal is an error reply naming the problem ----------------------------------------

TOO_BIG = b'{"id": "' + b"x" * 16384 + b'"}'
REFUSALS = [
    ("ping", TOO_BIG, "too_large", "payload is 16394 bytes; a command takes at most 16384"),
    ("ping", b'{"id": "\xff"}', "not_utf8", "payload is not UTF-8: byte 0xff at offset 8"),
    (
        "ping",
        b'{"id": }',
        "bad_json",
        "payload is not valid JSON: Expecting value at line 1 column 8",
    ),
    ("ping", b"\xef\xbb\xbf{}", "bad_json", "payload is not valid JSON: Unexpected UTF-8 BOM"),
    ("set_threshold", b'{"score": 0.5, "score": 0.9}', "duplicate_key", "duplicate key 'score'"),
    ("ping", b'{"a": {"b": 1, "b": 2}}', "duplicate_key", "duplicate key 'b' in a JSON object"),
    ("set_threshold", b'{"score": NaN}', "not_finite", "NaN is not a JSON number"),
    ("set_threshold", b'{"score": -Infinity}', "not_finite", "-Infinity is not a JSON number"),
    ("set_threshold", b'{"score": 1e999}', "not_finite", "1e999 is too large for a number"),
    ("ping", b"[1]", "not_object", "payload must be a JSON object such as"),
    ("ping", b"[1]", "not_object", "but got [1] (a JSON array)"),
    ("ping", b'"ping"', "not_object", 'but got "ping" (a JSON string)'),
    ("ping", b"null", "not_object", "but got null"),
    ("ping", b'{"label": "\\ud800"}', "bad_json", "escapes a lone UTF-16 surrogate"),
    ("ping", b"[" * 5000 + b"]" * 5000, "bad_json", "nested too deeply"),
    ("ping", b'{"n": ' + b"9" * 5000 + b"}", "bad_json", "payload is not valid JSON here"),
    (
        "ping",
        b'{"id": 7}',
        "bad_request",
        "'id' must be a string of 1 to 128 characters, but got 7",
    ),
    ("ping", b'{"id": ""}', "bad_request", "'id' must be a string"),
    (
        "reboot",
        b"",
        "unknown_command",
        "unknown command 'reboot'; this device knows get_config, get_stats, ping, "
        "reload_config, rollback_model, set_threshold, snapshot, update_model",
    ),
    (
        "set_threshold",
        b'{"score": 0.5, "colour": "red"}',
        "bad_args",
        "unknown argument 'colour' (set_threshold takes score (required), label)",
    ),
    ("set_threshold", b"{}", "bad_args", "missing argument 'score'"),
    (
        "set_threshold",
        b'{"score": "0.5"}',
        "bad_args",
        "argument 'score': Input should be a valid number, got \"0.5\" (a JSON string)",
    ),
    ("set_threshold", b'{"score": true}', "bad_args", "got true (a JSON boolean)"),
    (
        "set_threshold",
        b'{"score": 0}',
        "bad_args",
        "argument 'score': Input should be greater than 0",
    ),
    ("set_threshold", b'{"score": 1.5}', "bad_args", "Input should be less than or equal to 1"),
    ("set_threshold", b'{"score": 0.5, "label": 3}', "bad_args", "argument 'label'"),
    (
        "snapshot",
        b'{"source": "a/b"}',
        "bad_args",
        "argument 'source': character '/' at position 2 is not allowed in 'a/b'",
    ),
    (
        "ping",
        b'{"verbose": true}',
        "bad_args",
        "unknown argument 'verbose' (ping takes no arguments)",
    ),
    ("ping", b'{"sig": "AAAA"}', "bad_request", "this device has no command keys configured"),
]


@pytest.mark.parametrize(("name", "payload", "code", "wording"), REFUSALS)
def test_each_refusal_is_an_error_reply_with_code_and_wording(
    name: str, payload: bytes, code: str, wording: str
) -> None:
    calls: list[tuple[str, Any]] = []
    reply = make_router(calls).handle(incoming(name, payload, correlation=b"c"))
    assert reply is not None and reply.correlation == b"c"
    assert reply.topic == f"{PREFIX}/{DEVICE}/cmd/{name}/reply"
    body = json.loads(reply.payload)
    assert (body["ok"], body["command"], body["code"]) == (False, name, code)
    assert wording in body["error"]
    assert body["ts"] == NOW
    assert calls == []


def test_a_refusal_after_the_id_was_read_echoes_it() -> None:
    body = answer(make_router(), incoming("set_threshold", {"id": "r1", "score": 2}))
    assert (body["ok"], body["code"], body["id"]) == (False, "bad_args", "r1")


def test_a_command_without_a_handler_is_unknown_on_this_device() -> None:
    router = make_router(handlers={"ping": lambda args: {}})
    body = answer(router, incoming("snapshot", {"source": "cam1"}))
    assert body["code"] == "unknown_command"
    assert body["error"] == "unknown command 'snapshot'; this device knows ping"


def test_an_unsafe_command_name_is_not_echoed_into_the_reply_topic() -> None:
    reply = make_router().handle(incoming("a\x00b"))
    assert reply is not None and reply.topic == f"{PREFIX}/{DEVICE}/cmd/a_b/reply"
    assert json.loads(reply.payload)["command"] == "a_b"


def test_handlers_for_commands_outside_the_contract_are_a_caller_mistake() -> None:
    with pytest.raises(ValueError, match=r"handlers for unknown commands \['reboot'\]"):
        make_router(handlers={"reboot": lambda args: {}})


# --- handlers that refuse, fail or answer badly --------------------------------------------------


def test_a_handler_refusal_is_an_error_reply_with_its_words() -> None:
    def refuse(args: Any) -> dict[str, Any]:
        raise CommandRefused("no label 'tea' in model shelf-items@7")

    body = answer(make_router(handlers={"set_threshold": refuse}),
                  incoming("set_threshold", {"score": 0.5, "label": "tea"}))  # fmt: skip
    assert body == {"ok": False, "command": "set_threshold", "code": "refused",
                    "error": "no label 'tea' in model shelf-items@7", "ts": NOW}  # fmt: skip


def test_a_handler_that_raises_is_logged_with_traceback_and_its_text_kept_private(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def crash(args: Any) -> dict[str, Any]:
        raise RuntimeError("rtsp://admin:hunter2@cam broke")

    with caplog.at_level(logging.ERROR, logger="edge_agent.publish.commands"):
        body = answer(make_router(handlers={"reload_config": crash}), incoming("reload_config"))
    assert body["code"] == "failed"
    assert body["error"] == "reload_config failed (RuntimeError); the device log has details"
    assert "hunter2" not in json.dumps(body)
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


@pytest.mark.parametrize(
    ("result", "wording"),
    [
        ({"temp": float("nan")}, "get_stats failed: its result is not JSON"),
        ({"when": object()}, "get_stats failed: its result is not JSON"),
        ([1, 2], "get_stats failed: its result is not a JSON object"),
    ],
)
def test_a_result_that_is_not_a_json_object_is_an_error_reply(result: Any, wording: str) -> None:
    body = answer(make_router(handlers={"get_stats": lambda args: result}), incoming("get_stats"))
    assert (body["ok"], body["code"], body["error"]) == (False, "failed", wording)


# --- hypothesis: nothing a client sends makes handle() raise ------------------------------------

NAMES = st.sampled_from([*COMMAND_ARGS, "reboot", "", "cmd/x", "\x00", "ping/reply"])
FIELD_NAMES = st.sampled_from(["id", "score", "label", "source", "sig", "seq", "args"]) | st.text(
    max_size=8
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=6,
)


def check_reply(reply: Reply | None) -> dict[str, Any]:
    assert reply is not None
    body = json.loads(reply.payload.decode("utf-8"))
    assert isinstance(body, dict) and isinstance(body["ok"], bool)
    assert body["ok"] or body["code"] in ERROR_CODES
    return body


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, payload=st.binary(max_size=300), correlation=st.none() | st.binary(max_size=8))
def test_arbitrary_bytes_never_raise_and_always_get_a_json_reply(
    name: str, payload: bytes, correlation: bytes | None
) -> None:
    reply = ROUTER.handle(incoming(name, payload, correlation=correlation))
    check_reply(reply)
    assert reply is not None and reply.correlation == correlation


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, request=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=5))
def test_arbitrary_json_objects_never_raise_and_always_get_a_json_reply(
    name: str, request: dict[str, Any]
) -> None:
    body = check_reply(ROUTER.handle(incoming(name, json.dumps(request).encode())))
    if body["ok"]:  # only a well-formed request for a known command may succeed
        assert name in COMMAND_ARGS and set(request) <= {"id", "score", "label", "source"}


ROUTER = make_router()


# --- get_config redaction --------------------------------------------------------------------


def test_redact_masks_secrets_by_key_name_and_in_urls() -> None:
    config = {
        "device_id": "shelf-01",
        "mqtt": {"host": "broker", "username": "agent", "password": "hunter2",
                 "tls": {"ca_file": "/etc/edgesight/ca.pem", "key_file": "/etc/edgesight/k.pem"}},
        "sources": [{"id": "cam1", "uri": "rtsp://admin:p@ss@10.0.0.5/stream"},
                    {"id": "cam2", "uri": "https://tok3n@cams.example/a?x=1&access_token=abc"}],
        "hooks": {"client-secret": "s", "api_key": "k", "ssh_private_key": "PEM", "token": None},
        "model": {"public_keys": ["MCowBQYDK2VwAyEA"]},
    }  # fmt: skip
    before = json.dumps(config)
    assert redact(config) == {
        "device_id": "shelf-01",
        "mqtt": {
            "host": "broker",
            "username": "agent",
            "password": "***",
            "tls": {"ca_file": "/etc/edgesight/ca.pem", "key_file": "/etc/edgesight/k.pem"},
        },
        "sources": [
            {"id": "cam1", "uri": "rtsp://admin:***@10.0.0.5/stream"},
            {"id": "cam2", "uri": "https://***@cams.example/a?x=1&access_token=***"},
        ],
        "hooks": {
            "client-secret": "***",
            "api_key": "***",
            "ssh_private_key": "***",
            "token": None,
        },
        "model": {"public_keys": ["MCowBQYDK2VwAyEA"]},
    }
    assert json.dumps(config) == before  # the caller's config is not changed


# --- signed commands ---------------------------------------------------------------------------


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signed(
    key: Ed25519PrivateKey, seq: int, command: str = "set_threshold", **over: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {"device": DEVICE, "command": command, "seq": seq,
                              "expires": int(NOW) + 60, "args": {"score": 0.5}} | over  # fmt: skip
    return sign_command(key, **fields)


def signed_router(
    key: Ed25519PrivateKey, state: Path, calls: list[tuple[str, Any]], clock: Clock | None = None
) -> CommandRouter:
    clock = clock or Clock()
    auth = CommandAuth(DEVICE, [public_key_base64(key.public_key())], state, clock=clock)
    return make_router(calls, auth=auth, clock=clock)


def test_a_signed_command_runs_and_its_seq_is_recorded(key: Ed25519PrivateKey, tmp_path: Path):
    calls: list[tuple[str, Any]] = []
    state = tmp_path / "commands.json"
    router = signed_router(key, state, calls)
    body = answer(router, incoming("set_threshold", signed(key, 1, request_id="r9")))
    assert (body["ok"], body["id"]) == (True, "r9")
    assert calls == [("set_threshold", SetThresholdArgs(score=0.5))]
    recorded = json.loads(state.read_text())
    assert (recorded["last_seq"], recorded["key"]) == (1, fingerprint(key.public_key()))


@pytest.mark.parametrize(
    ("make", "code", "wording"),
    [
        (lambda k: signed(k, 1), "replayed", "seq 1 is not above the last accepted 5"),
        (lambda k: signed(k, 5), "replayed", "seq 5 is not above the last accepted 5"),
        (lambda k: signed(k, 6, expires=int(NOW)), "expired", "expired at 1800000000, 0 s ago"),
        (lambda k: signed(Ed25519PrivateKey.generate(), 6), "bad_signature", "does not verify"),
        (lambda k: signed(k, 6) | {"args": {"score": 0.9}}, "bad_signature", "does not verify"),
        (lambda k: signed(k, 6) | {"sig": "AAAA"}, "bad_signature", "base64 of a 64-byte"),
        (lambda k: signed(k, 6, device="shelf-02"), "wrong_device",
         "signed for device 'shelf-02', but this is 'shelf-01'"),
        (lambda k: signed(k, 6, command="get_config", args={}), "wrong_command",
         "signed for command 'get_config', but sent to cmd/set_threshold"),
        (lambda k: signed(k, 6) | {"seq": "6"}, "bad_envelope",
         "field 'seq': Input should be a valid integer"),
        (lambda k: {"score": 0.5}, "unsigned", "this device accepts only signed commands"),
        (lambda k: signed(k, 6, args={"score": 2}), "bad_args", "less than or equal to 1"),
    ],
)  # fmt: skip
def test_signed_commands_are_refused_when_they_should_be(
    key: Ed25519PrivateKey,
    tmp_path: Path,
    make: Callable[[Ed25519PrivateKey], dict[str, Any]],
    code: str,
    wording: str,
) -> None:
    calls: list[tuple[str, Any]] = []
    router = signed_router(key, tmp_path / "commands.json", calls)
    assert answer(router, incoming("set_threshold", signed(key, 5)))["ok"]
    body = answer(router, incoming("set_threshold", make(key)))
    assert (body["ok"], body["code"]) == (False, code)
    assert wording in body["error"]
    assert len(calls) == 1
    assert answer(router, incoming("set_threshold", signed(key, 6)))["ok"]  # seq 6 still free


def test_the_last_seq_survives_a_restart(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    state = tmp_path / "commands.json"
    calls: list[tuple[str, Any]] = []
    assert answer(signed_router(key, state, calls), incoming("set_threshold", signed(key, 3)))["ok"]
    again = signed_router(key, state, calls)  # a new CommandAuth on the same file
    assert answer(again, incoming("set_threshold", signed(key, 3)))["code"] == "replayed"
    assert answer(again, incoming("set_threshold", signed(key, 4)))["ok"]
    assert len(calls) == 2


def test_any_configured_key_may_sign(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    other = Ed25519PrivateKey.generate()
    state = tmp_path / "commands.json"
    auth = CommandAuth(DEVICE, [public_key_base64(other.public_key()), key.public_key()], state,
                       clock=Clock())  # fmt: skip
    router = make_router(auth=auth)
    assert answer(router, incoming("set_threshold", signed(key, 1)))["ok"]
    assert answer(router, incoming("set_threshold", signed(other, 2)))["ok"]
    assert json.loads(state.read_text())["key"] == fingerprint(other.public_key())


def test_a_damaged_state_file_refuses_signed_commands_until_an_operator_fixes_it(
    key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    state = tmp_path / "commands.json"
    state.write_text('{"last_seq": 12')  # cut short by a full disk
    calls: list[tuple[str, Any]] = []
    body = answer(signed_router(key, state, calls), incoming("set_threshold", signed(key, 13)))
    assert body["code"] == "auth_unavailable"
    assert (
        "was damaged (not UTF-8 JSON) and was moved aside to commands.json.damaged-"
        in body["error"]
    )
    assert not state.exists()
    assert len(list(tmp_path.glob("commands.json.damaged-*"))) == 1
    restarted = signed_router(key, state, calls)  # a restart must not start again from 0
    body = answer(restarted, incoming("set_threshold", signed(key, 13)))
    assert body["code"] == "auth_unavailable" and "damaged copy lies beside it" in body["error"]
    state.write_text('{"last_seq": 12}')  # the operator's fix, no restart needed
    assert answer(restarted, incoming("set_threshold", signed(key, 12)))["code"] == "replayed"
    assert answer(restarted, incoming("set_threshold", signed(key, 13)))["ok"]
    assert len(calls) == 1


@pytest.mark.parametrize("content", ['{"last_seq": -1}', '{"last_seq": true}', "[]", "\xff"])
def test_state_files_with_a_wrong_last_seq_are_damaged(
    key: Ed25519PrivateKey, tmp_path: Path, content: str
) -> None:
    state = tmp_path / "commands.json"
    state.write_bytes(content.encode("latin-1"))
    auth = CommandAuth(DEVICE, [key.public_key()], state)
    auth.load()
    assert auth.last_seq is None and auth.refusing is not None and not state.exists()


def test_a_seq_that_cannot_be_recorded_does_not_run(key: Ed25519PrivateKey, tmp_path: Path):
    folder = tmp_path / "state"
    folder.mkdir()
    calls: list[tuple[str, Any]] = []
    router = signed_router(key, folder / "commands.json", calls)
    assert answer(router, incoming("set_threshold", signed(key, 1)))["ok"]
    (folder / "commands.json").unlink()
    folder.rmdir()
    folder.write_text("not a folder")  # the state folder is gone: nothing can be written there
    body = answer(router, incoming("set_threshold", signed(key, 2)))
    assert body["code"] == "auth_unavailable"
    assert "cannot record the sequence number" in body["error"]
    assert len(calls) == 1


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    envelope=st.fixed_dictionaries(
        {"sig": st.text(max_size=100)},
        optional={
            "device": JSON_VALUES,
            "command": JSON_VALUES,
            "seq": JSON_VALUES,
            "expires": JSON_VALUES,
            "args": JSON_VALUES,
            "id": JSON_VALUES,
        },
    )
)
def test_arbitrary_envelopes_never_raise(envelope: dict[str, Any]) -> None:
    body = check_reply(SIGNED_ROUTER.handle(incoming("set_threshold", envelope)))
    assert not body["ok"]


_KEY = Ed25519PrivateKey.generate()
SIGNED_ROUTER = make_router(
    auth=CommandAuth(DEVICE, [_KEY.public_key()], "/nonexistent-edgesight/commands.json")
)


# --- over a real MQTT 5 broker: what the lead's paho callback hands the router -----------------


class V5Client:
    """A paho MQTT 5 client that keeps what it receives; ``on_message`` may be replaced."""

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.received.put(msg)
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), f"could not subscribe to {topic_filter}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_request_response_over_a_real_mqtt5_broker(broker: Broker) -> None:
    router = make_router(clock=time.time)
    base = f"{PREFIX}/{DEVICE}/cmd"
    setup = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    setup.connect(broker.host, broker.port)
    setup.loop_start()
    setup.publish(f"{base}/ping", b"{}", qos=1, retain=True).wait_for_publish(10)
    setup.disconnect()
    setup.loop_stop()

    answered: list[Reply | None] = []

    def serve(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        reply = router.handle(incoming_from_paho(msg))
        answered.append(reply)
        if reply is not None:
            props = Properties(PacketTypes.PUBLISH)
            if reply.correlation is not None:
                props.CorrelationData = reply.correlation
            client.publish(reply.topic, reply.payload, qos=1, properties=props)

    device = V5Client(broker, f"{base}/+")
    device.client.on_message = serve
    requester = V5Client(broker, "ops/replies/#")
    old_style = V5Client(broker, f"{base}/+/reply")
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "ops/replies/1"
        props.CorrelationData = b"req-1"
        props.MessageExpiryInterval = 60
        payload = b'{"score": 0.4}'
        requester.client.publish(f"{base}/set_threshold", payload, qos=1, properties=props)
        reply = requester.received.get(timeout=10)
        assert reply.topic == "ops/replies/1"
        assert reply.properties.CorrelationData == b"req-1"
        body = json.loads(reply.payload)
        assert (body["ok"], body["result"]) == (True, {"echo": {"score": 0.4, "label": None}})

        requester.client.publish(f"{base}/get_stats", b'{"id": "r2", "x": 1}', qos=1)
        reply = old_style.received.get(timeout=10)
        assert reply.topic == f"{base}/get_stats/reply"
        body = json.loads(reply.payload)
        assert (body["ok"], body["code"], body["id"]) == (False, "bad_args", "r2")
        assert answered[0] is None  # the retained ping, delivered on subscribe, was ignored
        assert router.counts == {"ignored_retained": 1, "ok": 1, "bad_args": 1}
    finally:
        for client in (device, requester, old_style):
            client.close()


def test_an_internal_error_still_gets_an_error_reply(caplog: pytest.LogCaptureFixture) -> None:
    def broken_clock() -> float:
        raise OSError("clock unavailable")

    with caplog.at_level(logging.ERROR, logger="edge_agent.publish.commands"):
        reply = make_router(clock=broken_clock).handle(incoming("ping", correlation=b"k"))
    assert reply == Reply(
        REPLY_PING,
        b'{"ok":false,"command":"ping","code":"failed",'
        b'"error":"internal error; the device log has details"}',
        b"k",
    )
    assert any(r.exc_info and r.exc_info[0] is OSError for r in caplog.records)
