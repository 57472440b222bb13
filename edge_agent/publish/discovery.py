"""Home Assistant MQTT discovery: one device-based message that makes every entity (pure
functions, no I/O; the publisher sends what these return).

Home Assistant (HA) reads ``<discovery prefix>/device/<object id>/config``, retained, holding
``dev`` (the device), ``o`` (who sent it) and ``cmps`` (one entry per entity, keyed by a
component id, each with ``p``, its platform). Rules followed here, from HA's source
(homeassistant/components/mqtt/discovery.py and schemas.py) and docs (integrations/mqtt.markdown,
"Device discovery payload"):

- the topic's object id and every component id match ``[a-zA-Z0-9_-]+``, or HA drops the
  message as an "illegal discovery topic"; a component id with a space would also break HA's
  cleanup, which splits discovery ids on spaces;
- only availability options, ``state_topic``, ``command_topic``, ``qos``, ``encoding`` and
  ``message_expiry_interval`` may sit beside ``dev``/``o``/``cmps``; anything else fails HA's
  DEVICE_DISCOVERY_SCHEMA and the whole device is ignored;
- an entity needs ``unique_id``; unknown keys inside a component are dropped silently, so a
  typo would vanish (tests/helpers/ha_schema.py checks every key);
- a component is removed by sending it with ``p`` alone, then a message without it; the
  whole device by an empty retained payload.

docs/home-assistant.md documents the entities for users: change it with this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.publish.topics import Topics

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
#: HA publishes its birth message ``online`` here (and ``offline`` as its will); on ``online``
#: the agent publishes discovery again: HA forgets discovered entities across its restarts.
BIRTH_PAYLOAD = b"online"
#: Names in topic levels and component ids HA accepts (discovery.py TOPIC_MATCHER).
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
#: Hex digits of sha256 added to an id whose text had to change, so "a b" and "a_b" differ.
ID_HASH_CHARS = 6

ORIGIN_NAME = "edgesight"

#: ``type`` values each stage's events carry (docs/mqtt.md); an HA event entity drops a type
#: missing from its ``event_types`` with a warning, so a source lists every type it can send.
CAMTRAP_EVENT_TYPES = ("start", "update", "end")
SLOT_EVENT_TYPES = ("low_stock", "out_of_stock", "restocked")
LOITER_EVENT_TYPES = ("loitering",)
#: A slot's ``state`` (edge_agent/analytics/slot_options.py State).
SLOT_STATES = ("ok", "low", "out")

# Value templates (HA's Jinja; ``value_json`` is the decoded payload). ``in`` is a Jinja
# keyword, hence ``value_json['in']``. No label or zone name is ever put inside a template:
# they come from models and configs, and quoting them safely for Jinja is not worth the risk.
COUNT_TEMPLATE = "{{ value_json.count }}"
LINE_TEMPLATES = {"in": "{{ value_json['in'] }}", "out": "{{ value_json['out'] }}"}
SLOT_STATE_TEMPLATE = "{{ value_json.state }}"
#: HA sets a sensor to unknown when a template renders "None" (a status with no model).
MODEL_VERSION_TEMPLATE = "{{ value_json.model.version if value_json.model else None }}"
#: The status is JSON; degraded is still available (the agent runs, something failed once).
AVAILABILITY_TEMPLATE = (
    "{{ 'online' if value_json.state in ('online', 'degraded') else 'offline' }}"
)
#: HA's event entity wants a JSON object with ``event_type``; ours says ``type``. The other
#: fields become the event's attributes.
EVENT_TEMPLATE = "{{ dict(value_json, event_type=value_json.type) | tojson }}"
#: Paths in the stats topic's JSON (``<prefix>/<device>/stats``), set where that payload is made.
OUTBOX_DEPTH_TEMPLATE = "{{ value_json.outbox.depth }}"
FPS_TEMPLATE = "{{{{ value_json.sources['{source}'].fps }}}}"
#: A live source's connectivity, from ``source_state.<id>`` of the status (HA's binary sensor
#: takes "ON"/"OFF", and "None" as unknown: a source that has said no state yet).
CONNECTIVITY_TEMPLATE = (
    "{{% set s = (value_json.source_state or {{}}).get('{source}') %}}"
    "{{{{ 'None' if s is none else ('ON' if s.state == 'streaming' else 'OFF') }}}}"
)
#: The same entry as the sensor's attributes (reason, reopens, last_frame_ts, ...).
CONNECTIVITY_ATTRIBUTES_TEMPLATE = (
    "{{{{ ((value_json.source_state or {{}}).get('{source}') or {{}}) | tojson }}}}"
)


@dataclass(frozen=True)
class ZoneInputs:
    """A zone and the labels the ``zones`` stage counts in it (its ``labels_of``)."""

    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SourceInputs:
    """What one source publishes, so only entities with a state topic are made."""

    id: str
    labels: tuple[str, ...] = ()  # <src>/count/<label>
    zones: tuple[ZoneInputs, ...] = ()
    lines: tuple[str, ...] = ()
    slots: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()  # empty: no event entity
    snapshot: bool = False
    live: bool = False  # a camera or stream: a connectivity binary sensor


@dataclass(frozen=True)
class DiscoveryInputs:
    """Everything the message depends on; the same inputs give the same message (and ids)."""

    device_id: str
    topic_prefix: str
    agent_version: str
    model: Mapping[str, object] | None  # Bundle.describe(): name, version, sha256
    sources: tuple[SourceInputs, ...] = ()
    stats: bool = True  # the stats topic exists: fps and outbox depth sensors
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX


def safe_id(text: str) -> str:
    """``text`` as HA allows in ids: other characters become ``_`` and, if any did, a short
    hash of the original follows, so distinct names stay distinct and ids stay stable."""
    if _SAFE_ID.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:ID_HASH_CHARS]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', text)}_{digest}"


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    """``<discovery prefix>/device/<object id>/config``; the object id is the device id made
    safe (a device id may hold ``.``, which HA refuses there)."""
    prefix = discovery_prefix.rstrip("/")
    if not prefix or any(ch in prefix for ch in "+#"):
        raise ValueError(
            f"discovery prefix must be non-empty without '+' or '#', but got {discovery_prefix!r}"
        )
    return f"{prefix}/device/{safe_id(device_id)}/config"


def birth_topic(discovery_prefix: str) -> str:
    """Where HA announces itself; ``BIRTH_PAYLOAD`` there asks for discovery again."""
    return f"{discovery_prefix.rstrip('/')}/status"


@dataclass
class _Builder:
    """Collects components; an id two names happen to share gets a hash of its parts."""

    device: str
    cmps: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(self, parts: tuple[str, ...], config: dict[str, Any]) -> None:
        cid = "_".join(safe_id(p) for p in parts)
        if cid in self.cmps and self.parts[cid] != parts:
            raw = "\x00".join(parts).encode("utf-8", "surrogatepass")
            cid = f"{cid}_{hashlib.sha256(raw).hexdigest()[:ID_HASH_CHARS]}"
        self.parts[cid] = parts
        self.cmps[cid] = {**config, "uniq_id": f"edgesight_{safe_id(self.device)}_{cid}"}


def _sensor(name: str, topic: str, template: str, **extra: Any) -> dict[str, Any]:
    return {"p": "sensor", "name": name, "stat_t": topic, "val_tpl": template, **extra}


def _counter(name: str, topic: str, template: str = COUNT_TEMPLATE) -> dict[str, Any]:
    """A count of objects: a measurement, whole numbers, the payload's fields as attributes."""
    extra = {"stat_cla": "measurement", "sug_dsp_prc": 0, "ic": "mdi:counter"}
    return _sensor(name, topic, template, json_attr_t=topic, **extra)


def _source_components(b: _Builder, t: Topics, src: SourceInputs) -> None:
    s = src.id
    for label in src.labels:
        b.add((s, "count", label), _counter(f"{s} {label} count", t.count(s, label)))
    for zone in src.zones:
        for label in zone.labels:
            topic = t.zone(s, zone.name, label)
            b.add((s, "zone", zone.name, label), _counter(f"{s} {zone.name} {label}", topic))
    for line in src.lines:
        for way, template in LINE_TEMPLATES.items():
            config = _counter(f"{s} {line} {way}", t.line(s, line), template)
            # Totals since ``since``, kept across restarts; a lost state folder restarts them.
            config.update(
                stat_cla="total_increasing",
                ic=f"mdi:arrow-{'right' if way == 'in' else 'left'}-bold",
            )
            b.add((s, "line", line, way), config)
    for slot in src.slots:
        topic = t.slot(s, slot)
        b.add((s, "slot", slot), _counter(f"{s} {slot} stock", topic))
        state = _sensor(f"{s} {slot} state", topic, SLOT_STATE_TEMPLATE, dev_cla="enum")
        b.add((s, "slot", slot, "state"), {**state, "ops": list(SLOT_STATES), "ic": "mdi:tag"})
    if src.snapshot:
        image = {"p": "image", "name": f"{s} snapshot", "img_t": t.snapshot(s)}
        b.add((s, "snapshot"), {**image, "cont_type": "image/jpeg"})
    if src.live:
        _connectivity(b, t, s)
    if src.event_types:
        event: dict[str, Any] = {"p": "event", "name": f"{s} event", "stat_t": t.event(s)}
        event.update(evt_typ=list(src.event_types), val_tpl=EVENT_TEMPLATE, ic="mdi:bell")
        b.add((s, "event"), event)


def _connectivity(b: _Builder, t: Topics, s: str) -> None:
    """A live source's connectivity: on while it is streaming, from the retained status."""
    if not _SAFE_ID.fullmatch(s):  # config.py allows no other; it goes in a template
        raise ValueError(f"source id {s!r} must be letters, digits, '_' or '-' for Home Assistant")
    config = {
        "p": "binary_sensor",
        "name": f"{s} connected",
        "stat_t": t.status(),
        "val_tpl": CONNECTIVITY_TEMPLATE.format(source=s),
        "dev_cla": "connectivity",
        "json_attr_t": t.status(),
        "json_attr_tpl": CONNECTIVITY_ATTRIBUTES_TEMPLATE.format(source=s),
        "ent_cat": "diagnostic",
    }
    b.add((s, "connected"), config)


def _stats_components(b: _Builder, t: Topics, sources: tuple[SourceInputs, ...]) -> None:
    diagnostic = {"ent_cat": "diagnostic", "stat_cla": "measurement"}
    for src in sources:
        if not _SAFE_ID.fullmatch(src.id):  # config.py allows no other; it goes in a template
            raise ValueError(
                f"source id {src.id!r} must be letters, digits, '_' or '-' for Home Assistant"
            )
        fps = FPS_TEMPLATE.format(source=src.id)
        config = _sensor(f"{src.id} fps", t.stats(), fps, unit_of_meas="fps", **diagnostic)
        b.add((src.id, "fps"), {**config, "sug_dsp_prc": 1, "ic": "mdi:speedometer"})
    depth = _sensor("Outbox depth", t.stats(), OUTBOX_DEPTH_TEMPLATE, **diagnostic)
    b.add(("outbox_depth",), {**depth, "unit_of_meas": "messages", "ic": "mdi:tray-full"})


def discovery_message(cfg: DiscoveryInputs) -> tuple[str, dict[str, Any]]:
    """The retained device discovery message: topic and payload (publish it compact, QoS 1,
    retained, at connect and whenever HA's birth message says ``online``)."""
    t = Topics(cfg.topic_prefix, cfg.device_id)
    b = _Builder(cfg.device_id)
    for src in cfg.sources:
        _source_components(b, t, src)
    model = _sensor("Model version", t.status(), MODEL_VERSION_TEMPLATE, ent_cat="diagnostic")
    b.add(("model_version",), {**model, "ic": "mdi:brain"})
    if cfg.stats:
        _stats_components(b, t, cfg.sources)
    device: dict[str, Any] = {
        "ids": [f"edgesight_{cfg.device_id}"],
        "name": cfg.device_id,
        "mf": "edgesight",
        "mdl": str(cfg.model["name"]) if cfg.model and "name" in cfg.model else "edgesight agent",
        "sw": cfg.agent_version,
    }
    payload = {
        "dev": device,
        "o": {"name": ORIGIN_NAME, "sw": cfg.agent_version},
        "avty_t": t.status(),
        "avty_tpl": AVAILABILITY_TEMPLATE,
        "pl_avail": "online",
        "pl_not_avail": "offline",
        "qos": 1,
        "cmps": b.cmps,
    }
    return discovery_topic(cfg.discovery_prefix, cfg.device_id), payload


def parse_previous(raw: bytes) -> dict[str, Any] | None:
    """The discovery payload the broker kept (read back on connect: the agent may have been
    reconfigured while stopped), or None for an empty, unreadable or foreign message."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("cmps"), dict):
        return None
    return payload


def removed_components(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, str]:
    """Component id -> platform for each entity ``previous`` had and ``current`` lacks (an
    entry that was already a removal, ``p`` alone, is not removed twice)."""
    before = previous.get("cmps") or {}
    after = current.get("cmps") or {}
    return {
        cid: c["p"]
        for cid, c in before.items()
        if cid not in after and isinstance(c, dict) and isinstance(c.get("p"), str) and len(c) > 1
    }


def removal_message(
    previous: Mapping[str, Any], current: tuple[str, dict[str, Any]]
) -> tuple[str, dict[str, Any]] | None:
    """The message that removes what went away (a zone, a label, a source) since ``previous``:
    ``current`` plus each removed component as ``{"p": platform}``, which HA takes as "delete
    this entity". Publish it, then ``current`` itself (HA's docs ask for that second update).
    None when nothing was removed."""
    gone = removed_components(previous, current[1])
    if not gone:
        return None
    topic, payload = current
    cmps = {**payload["cmps"], **{cid: {"p": platform} for cid, platform in gone.items()}}
    return topic, {**payload, "cmps": cmps}


def device_removal(discovery_prefix: str, device_id: str) -> tuple[str, bytes]:
    """Topic and empty payload (publish it retained) that remove the device and all its
    entities from HA and clear the retained discovery message."""
    return discovery_topic(discovery_prefix, device_id), b""
