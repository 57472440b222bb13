"""Home Assistant discovery (publish/discovery.py): payloads checked field by field against
HA's rules (tests/helpers/ha_schema.py), value templates rendered on our real payloads, and the
retained message round-tripped through a real mosquitto."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.analytics.slots import event_type
from edge_agent.analytics.tallies import LineTallies
from edge_agent.publish import discovery as d
from edge_agent.publish.payloads import count_payload, encode, status_payload
from edge_agent.publish.topics import Topics
from tests.helpers.ha_schema import SAFE_ID, Invalid, check_device_message
from tests.helpers.mqtt import Broker, Recorder

jinja2_sandbox = pytest.importorskip("jinja2.sandbox", reason="jinja2 renders HA templates")

MODEL = {"name": "shelf-items", "version": 7, "sha256": "9f2c4e"}
CAM1 = d.SourceInputs(
    "cam1",
    labels=("cola", "water"),
    zones=(d.ZoneInputs("till", ("person",)),),
    lines=("door",),
    snapshot=True,
    event_types=d.CAMTRAP_EVENT_TYPES + d.LOITER_EVENT_TYPES,
)
SHELF = d.SourceInputs("shelf", labels=("cola",), slots=("cola",), event_types=d.SLOT_EVENT_TYPES)


def inputs(*sources: d.SourceInputs, **kw: Any) -> d.DiscoveryInputs:
    kw.setdefault("model", MODEL)
    return d.DiscoveryInputs("shelf-01", "edgesight", "0.1.0", sources=sources, **kw)


def render(template: str, payload: dict[str, Any]) -> str:
    """Render as HA does for MQTT: a sandboxed Jinja with ``value`` and ``value_json``."""
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    return str(env.from_string(template).render(value=json.dumps(payload), value_json=payload))


def test_full_message_passes_home_assistants_rules() -> None:
    topic, payload = d.discovery_message(inputs(CAM1, SHELF))
    assert topic == "homeassistant/device/shelf-01/config"
    cmps = check_device_message(payload)
    assert sorted(cmps) == sorted([
        "cam1_count_cola", "cam1_count_water", "cam1_zone_till_person", "cam1_line_door_in",
        "cam1_line_door_out", "cam1_snapshot", "cam1_event", "cam1_fps",
        "shelf_count_cola", "shelf_slot_cola", "shelf_slot_cola_state", "shelf_event",
        "shelf_fps", "model_version", "outbox_depth",
    ])  # fmt: skip
    # Availability comes from the device level into every entity, as HA merges it.
    for config in cmps.values():
        assert config["availability_topic"] == "edgesight/shelf-01/status"
        assert config["unique_id"].startswith("edgesight_shelf-01_")


def test_every_entity_reads_the_topic_the_agent_publishes() -> None:
    t = Topics("edgesight", "shelf-01")
    cmps = check_device_message(d.discovery_message(inputs(CAM1, SHELF))[1])
    assert cmps["cam1_count_cola"]["state_topic"] == t.count("cam1", "cola")
    assert cmps["cam1_zone_till_person"]["state_topic"] == t.zone("cam1", "till", "person")
    assert cmps["cam1_line_door_in"]["state_topic"] == t.line("cam1", "door")
    assert cmps["shelf_slot_cola"]["state_topic"] == t.slot("shelf", "cola")
    assert cmps["cam1_snapshot"] == {
        "platform": "image", "name": "cam1 snapshot", "image_topic": t.snapshot("cam1"),
        "content_type": "image/jpeg", "unique_id": "edgesight_shelf-01_cam1_snapshot",
        "availability_topic": t.status(), "availability_template": d.AVAILABILITY_TEMPLATE,
        "payload_available": "online", "payload_not_available": "offline", "qos": 1,
    }  # fmt: skip
    assert cmps["cam1_event"]["state_topic"] == t.event("cam1")
    assert cmps["cam1_event"]["event_types"] == ["start", "update", "end", "loitering"]
    assert cmps["shelf_event"]["event_types"] == ["low_stock", "out_of_stock", "restocked"]
    assert cmps["model_version"]["state_topic"] == t.status()
    assert cmps["outbox_depth"]["state_topic"] == t.stats()
    assert cmps["outbox_depth"]["entity_category"] == "diagnostic"
    assert cmps["shelf_slot_cola_state"]["options"] == ["ok", "low", "out"]


def test_device_and_origin() -> None:
    payload = d.discovery_message(inputs(CAM1))[1]
    assert payload["dev"] == {
        "ids": ["edgesight_shelf-01"], "name": "shelf-01", "mf": "edgesight",
        "mdl": "shelf-items", "sw": "0.1.0",
    }  # fmt: skip
    assert payload["o"] == {"name": "edgesight", "sw": "0.1.0"}
    assert d.discovery_message(inputs(CAM1, model=None))[1]["dev"]["mdl"] == "edgesight agent"


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda p: p["cmps"]["cam1_count_cola"].pop("uniq_id"), "needs unique_id"),
        (lambda p: p["cmps"]["cam1_count_cola"].update(stat_topic="x"), "unknown option"),
        (lambda p: p["cmps"]["cam1_count_cola"].pop("stat_t"), "'state_topic' is missing"),
        (lambda p: p["cmps"]["cam1_event"].pop("evt_typ"), "'event_types' is missing"),
        (lambda p: p["cmps"]["cam1_snapshot"].update(url_t="a/b"), "exactly one of"),
        (lambda p: p["cmps"]["cam1_count_cola"].update(p="bogus"), "platform 'bogus'"),
        (lambda p: p["cmps"]["cam1_count_cola"].update(ic="counter"), "'icon' has an invalid"),
        (
            lambda p: p["cmps"]["cam1_count_cola"].update(ops=["a"], stat_cla=None),
            "options need device_class",
        ),
        (lambda p: p["cmps"]["cam1_count_cola"].update(stat_t="a/#/b"), "'state_topic' has"),
        (lambda p: p["cmps"]["cam1_count_cola"].update(dev={"ids": "x"}), "set by the device"),
        (lambda p: p["cmps"].update({"a b": {"p": "sensor"}}), "id must match"),
        (lambda p: p.pop("o"), "'origin' is missing"),
        (lambda p: p["o"].pop("name"), "'name' is missing"),
        (lambda p: p["dev"].pop("ids"), "identifiers, connections"),
        (lambda p: p.update(name="x"), "unknown option 'name'"),
        (lambda p: p.update(avty=[{"t": "x"}]), "exclusive"),
        (lambda p: p["cmps"]["cam1_count_cola"].update(unique_id="u"), "same option"),
    ],
)
def test_the_checker_refuses_what_home_assistant_refuses(
    mutate: Callable[[dict[str, Any]], object], error: str
) -> None:
    """The oracle is not vacuous: each broken rule fails with its reason."""
    payload = json.loads(json.dumps(d.discovery_message(inputs(CAM1))[1]))
    mutate(payload)
    with pytest.raises(Invalid, match=error):
        check_device_message(payload)


def test_ids_are_stable_and_do_not_move_when_a_source_is_added() -> None:
    one = d.discovery_message(inputs(CAM1))[1]["cmps"]
    again = d.discovery_message(inputs(CAM1))[1]["cmps"]
    two = d.discovery_message(inputs(SHELF, CAM1))[1]["cmps"]
    assert one == again
    assert {k: v["uniq_id"] for k, v in one.items()}.items() <= {
        k: v["uniq_id"] for k, v in two.items()
    }.items()


def test_names_that_would_collide_get_distinct_safe_ids() -> None:
    src = d.SourceInputs(
        "cam1",
        labels=("tin can/6+", "tin_can_6_", "ĉapelo"),
        zones=(d.ZoneInputs("z_person", ("x",)), d.ZoneInputs("z", ("person_x",))),
        slots=("cola", "cola_state"),
    )
    cmps = check_device_message(d.discovery_message(inputs(src, model=None, stats=False))[1])
    assert len(cmps) == 3 + 2 + 4 + 1  # labels, zone labels, slots (count + state), model
    assert all(SAFE_ID.fullmatch(cid) for cid in cmps)
    # The real label is in the name; the topic is the one the publisher uses (two labels that
    # differ only in characters topics cannot hold share a topic: topics.topic_level).
    t = Topics("edgesight", "shelf-01")
    by_name = {c["name"]: c["state_topic"] for c in cmps.values() if c["platform"] == "sensor"}
    assert by_name["cam1 tin can/6+ count"] == t.count("cam1", "tin can/6+")
    assert by_name["cam1 ĉapelo count"] == "edgesight/shelf-01/cam1/count/ĉapelo"


def test_a_device_id_with_a_dot_gets_a_topic_home_assistant_accepts() -> None:
    topic = d.discovery_topic("homeassistant", "shelf.01")
    object_id = topic.split("/")[2]
    assert SAFE_ID.fullmatch(object_id) and object_id != d.safe_id("shelf_01")
    assert d.discovery_topic("site/ha/", "a") == "site/ha/device/a/config"
    with pytest.raises(ValueError, match="discovery prefix"):
        d.discovery_topic("ha/#", "a")
    assert d.birth_topic("homeassistant") == "homeassistant/status"


@given(st.text(max_size=20), st.text(max_size=20))
def test_safe_id_is_safe_and_keeps_names_apart(a: str, b: str) -> None:
    assert SAFE_ID.fullmatch(d.safe_id(a))
    if a != b:
        assert d.safe_id(a) != d.safe_id(b)


def test_a_source_id_that_cannot_go_in_a_template_is_refused() -> None:
    with pytest.raises(ValueError, match="source id 'cam 1'"):
        d.discovery_message(inputs(d.SourceInputs("cam 1")))


def test_the_docs_example_is_what_the_code_sends() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "home-assistant.md").read_text()
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    cam1 = d.SourceInputs(
        "cam1", labels=("person",), snapshot=True, event_types=d.CAMTRAP_EVENT_TYPES
    )
    assert json.loads(block) == d.discovery_message(inputs(cam1))[1]


# --- the value templates on the payloads the agent really sends ---------------------------


def test_count_zone_slot_and_line_templates_read_the_number() -> None:
    assert render(d.COUNT_TEMPLATE, count_payload(3, 1.0)) == "3"
    zone = {"count": 1, "entries": 2, "exits": 1, "current_since": 5.0, "ts": 6.0}
    assert render(d.COUNT_TEMPLATE, zone) == "1"
    tallies = LineTallies()
    tallies.advance(1700000000.0)
    line = {**tallies.payload(), "ts": 1700000001.0}
    line.update({"in": 4, "out": 2})
    assert render(d.LINE_TEMPLATES["in"], line) == "4"
    assert render(d.LINE_TEMPLATES["out"], line) == "2"
    slot = {"label": "cola", "count": 0, "capacity": 6, "fill": 0.0, "state": "out"}
    assert render(d.SLOT_STATE_TEMPLATE, slot) in d.SLOT_STATES


@pytest.mark.parametrize(("state", "shown"), [("online", "online"), ("degraded", "online"),
                                               ("offline", "offline")])  # fmt: skip
def test_availability_counts_degraded_as_available(state: str, shown: str) -> None:
    status = status_payload(state, 1.0, "0.1.0", MODEL, ["cam1"])
    assert render(d.AVAILABILITY_TEMPLATE, status) == shown


def test_model_version_is_unknown_without_a_model() -> None:
    assert render(d.MODEL_VERSION_TEMPLATE, status_payload("online", 1, "v", MODEL, [])) == "7"
    # HA turns the rendered "None" into an unknown state (sensor.py PAYLOAD_NONE).
    assert render(d.MODEL_VERSION_TEMPLATE, status_payload("online", 1, "v", None, [])) == "None"


def test_event_template_gives_home_assistant_an_event_type() -> None:
    event = {"type": "out_of_stock", "id": "1-a", "slot": "cola", "count": 0, "snapshot": None}
    rendered = json.loads(render(d.EVENT_TEMPLATE, event))
    assert rendered == {**event, "event_type": "out_of_stock"}


def test_stats_templates_read_the_stats_shape() -> None:
    stats = {"sources": {"cam1": {"fps": 14.5}}, "outbox": {"depth": 12}}
    assert render(d.FPS_TEMPLATE.format(source="cam1"), stats) == "14.5"
    assert render(d.OUTBOX_DEPTH_TEMPLATE, stats) == "12"


def test_slot_event_types_cover_every_event_the_slots_stage_fires() -> None:
    states = (None, *d.SLOT_STATES)
    fired = {event_type(a, b) for a in states for b in d.SLOT_STATES} - {None}  # type: ignore[arg-type]
    assert fired == set(d.SLOT_EVENT_TYPES)


# --- removal ------------------------------------------------------------------------------


def test_removal_marks_what_went_away_with_its_platform_only() -> None:
    before = d.discovery_message(inputs(CAM1, SHELF))[1]
    now = d.discovery_message(inputs(d.SourceInputs("cam1", labels=("cola",))))
    topic, payload = d.removal_message(before, now) or pytest.fail("nothing removed")
    cmps = check_device_message(payload)
    gone = {cid for cid, c in cmps.items() if list(c) == ["platform"]}
    assert gone == set(before["cmps"]) - set(now[1]["cmps"])
    assert cmps["cam1_snapshot"] == {"platform": "image"}
    assert cmps["cam1_count_cola"]["unique_id"] == "edgesight_shelf-01_cam1_count_cola"
    assert topic == now[0]
    assert d.removal_message(now[1], now) is None
    assert d.removal_message(payload, now) is None  # removals already sent are not repeated


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"cmps": 3}', b"\xff"])
def test_a_retained_message_that_is_not_ours_gives_no_previous(raw: bytes) -> None:
    assert d.parse_previous(raw) is None


def test_the_retained_message_read_back_drives_removal() -> None:
    before = d.discovery_message(inputs(CAM1))
    previous = d.parse_previous(encode(before[1]))
    assert previous == before[1]
    removal = d.removal_message(previous, d.discovery_message(inputs()))
    assert removal is not None and removal[1]["cmps"]["cam1_event"] == {"p": "event"}


# --- a real broker ------------------------------------------------------------------------


def publish(broker: Broker, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one QoS 1 message and wait for the broker's PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"disc-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    publish(broker, topic, payload, retain=True)


def test_retained_message_round_trips_and_removal_empties_it(
    broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> None:
    topic, payload = d.discovery_message(inputs(CAM1, SHELF))
    publish_retained(broker, topic, encode(payload))
    late = mqtt_recorder(broker, "homeassistant/#")  # subscribes after: gets the retained copy
    assert late.wait_for(lambda: bool(late.on(topic)))
    (msg,) = late.on(topic)
    assert msg.retain and msg.qos == 1
    assert json.loads(msg.payload) == payload
    check_device_message(json.loads(msg.payload))

    # A source goes away: its components are sent with the platform alone, then dropped.
    removal = d.removal_message(payload, d.discovery_message(inputs(SHELF)))
    assert removal is not None
    publish_retained(broker, removal[0], encode(removal[1]))
    assert late.wait_for(lambda: len(late.on(topic)) == 2)
    cmps = check_device_message(json.loads(late.on(topic)[1].payload))
    assert cmps["cam1_count_cola"] == {"platform": "sensor"}
    assert cmps["shelf_count_cola"]["platform"] == "sensor"

    # The device goes away: an empty retained payload, which also clears the broker's copy.
    publish_retained(broker, *d.device_removal("homeassistant", "shelf-01"))
    assert late.wait_for(lambda: len(late.on(topic)) == 3)
    assert late.on(topic)[2].payload == b""
    fresh = mqtt_recorder(broker, "homeassistant/#")
    publish(broker, "homeassistant/marker", b"after")  # retained copies come before it
    assert fresh.wait_for(lambda: bool(fresh.on("homeassistant/marker")))
    assert fresh.on(topic) == []


# --- a live source's connectivity binary sensor ------------------------------------------------

GATE = d.SourceInputs("gate", labels=("person",), live=True)


def test_a_live_source_gets_a_connectivity_sensor_home_assistant_accepts() -> None:
    cmps = check_device_message(d.discovery_message(inputs(GATE, SHELF))[1])
    sensor = cmps["gate_connected"]
    assert sensor["platform"] == "binary_sensor" and sensor["device_class"] == "connectivity"
    assert (
        sensor["state_topic"]
        == sensor["json_attributes_topic"]
        == Topics("edgesight", "shelf-01").status()
    )
    assert "shelf_connected" not in cmps  # not live: no sensor


@pytest.mark.parametrize(
    ("state", "shown"),
    [("streaming", "ON"), ("reconnecting", "OFF"), ("stalled", "OFF"), ("failed", "OFF")],
)
def test_connectivity_reads_the_source_state_of_the_status(state: str, shown: str) -> None:
    entry = {"state": state, "reason": "connection refused", "since": 1.0, "last_frame_ts": 2.0,
             "width": 640, "height": 480, "reopens": 3, "frames_dropped": 0}  # fmt: skip
    status = status_payload("online", 1.0, "v", MODEL, ["gate"], source_state={"gate": entry})
    assert render(d.CONNECTIVITY_TEMPLATE.format(source="gate"), status) == shown
    attributes = json.loads(
        render(d.CONNECTIVITY_ATTRIBUTES_TEMPLATE.format(source="gate"), status)
    )
    assert attributes == entry


def test_connectivity_is_unknown_before_the_source_says_a_state() -> None:
    status = status_payload("online", 1.0, "v", MODEL, ["gate"])  # an older agent: no key
    assert render(d.CONNECTIVITY_TEMPLATE.format(source="gate"), status) == "None"
    status = status_payload("online", 1.0, "v", MODEL, ["gate"], source_state={})
    assert render(d.CONNECTIVITY_TEMPLATE.format(source="gate"), status) == "None"
    assert render(d.CONNECTIVITY_ATTRIBUTES_TEMPLATE.format(source="gate"), status) == "{}"
