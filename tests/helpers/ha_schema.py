"""Home Assistant's rules for a device-based MQTT discovery message, transcribed by hand so the
tests can check our payloads without installing Home Assistant (it needs Python 3.13).

Transcribed from home-assistant/core, homeassistant/components/mqtt/ (read, not copied):
- schemas.py at commit 0f5c1b547043f5395608e09de3dcf4b7cfafef3d: DEVICE_DISCOVERY_SCHEMA,
  MQTT_ENTITY_DEVICE_INFO_SCHEMA (identifiers or connections), MQTT_ORIGIN_INFO_SCHEMA (name
  required), the availability schemas, COMPONENT_CONFIG_SCHEMA (``platform`` required);
- the dev branch's schemas.py as stored in September 2026 (no commit recorded in the store):
  MQTT_ENTITY_COMMON_SCHEMA (entity_picture, default_entity_id, message_expiry_interval,
  visible_by_default added; object_id gone), check_unique_id (an entity component with more
  than ``platform`` needs ``unique_id``), SHARED_OPTIONS;
- discovery.py (dev, same snapshot): abbreviations are expanded at the top level, in each
  component, in ``device`` and in ``origin``; a device message is validated whole and dropped
  on any error; shared options are copied into components that lack them;
- config.py: MQTT_BASE_SCHEMA (qos, encoding), MQTT_RO_SCHEMA (state_topic required,
  value_template); sensor.py (dev): its schema and validate_sensor_state_and_device_class_config;
  image.py at 7fd78000bf36b68eecd267abc1488f17f7e277e0; event.py at
  5974c7760ac09b1772ea9f7d88ca5e8368c7260b;
- abbreviations.py at 0f5c1b54 plus the docs' table (home-assistant.io
  source/_integrations/mqtt.markdown). 0f5c1b54 predates the merge of core PR #118757 (device
  discovery): it spells ``cmp`` and has no ``p``, which that PR's review added; the docs and
  core issue #145356 confirm ``cmps`` and ``p``.

Only the abbreviations of keys allowed below are transcribed, and only the platforms this
project uses (sensor, image, event). HA drops unknown keys inside a component silently; this
checker refuses them instead, so a misspelt key fails a test rather than vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "cmps": "components", "cont_type": "content_type",
    "dev": "device", "dev_cla": "device_class", "e": "encoding", "en": "enabled_by_default",
    "ent_cat": "entity_category", "ent_pic": "entity_picture", "evt_typ": "event_types",
    "exp_aft": "expire_after", "frc_upd": "force_update", "ic": "icon",
    "img_e": "image_encoding", "img_t": "image_topic", "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template", "lrst_val_tpl": "last_reset_value_template",
    "name": "name", "o": "origin", "ops": "options", "p": "platform",
    "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_on": "payload_on", "pl_off": "payload_off", "off_dly": "off_delay",
    "stat_cla": "state_class", "stat_t": "state_topic",
    "sug_dsp_prc": "suggested_display_precision",
    "t": "topic", "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement",
    "url_t": "url_topic", "url_tpl": "url_template", "val_tpl": "value_template",
}  # fmt: skip
DEVICE_ABBREVIATIONS = {
    "cns": "connections", "cu": "configuration_url", "ids": "identifiers", "name": "name",
    "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id", "hw": "hw_version",
    "sw": "sw_version", "sa": "suggested_area", "sn": "serial_number",
}  # fmt: skip
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}

ENTITY_CATEGORIES = ("config", "diagnostic")
STATE_CLASSES = ("measurement", "measurement_angle", "total", "total_increasing")
EVENT_DEVICE_CLASSES = ("button", "doorbell", "motion")
#: binary_sensor/__init__.py BinarySensorDeviceClass, the few we may use.
BINARY_SENSOR_DEVICE_CLASSES = ("connectivity", "problem", "running")
#: Only the sensor device classes this project uses; add one after checking HA's list.
SENSOR_DEVICE_CLASSES = ("enum",)
AVAILABILITY_MODES = ("all", "any", "latest")
#: discovery.py TOPIC_MATCHER's class for object and node ids; also what HA's cleanup needs of
#: a component id (it splits discovery ids on spaces).
SAFE_ID = re.compile(r"[a-zA-Z0-9_-]+")
DEVICE_KEYS = frozenset(DEVICE_ABBREVIATIONS.values()) | {"via_device"}
ORIGIN_KEYS = frozenset(ORIGIN_ABBREVIATIONS.values())


class Invalid(ValueError):
    """A rule HA enforces was broken; the message says where."""


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _icon(v: Any) -> bool:  # cv.icon: "prefix:name"
    return isinstance(v, str) and ":" in v


def _url(v: Any) -> bool:
    return isinstance(v, str) and v.startswith(("http://", "https://"))


def _str_list(v: Any) -> bool:  # cv.ensure_list then [cv.string]
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def subscribe_topic(v: Any) -> bool:
    """util.valid_subscribe_topic: non-empty UTF-8, no NUL, '+' a whole level, '#' last."""
    if not isinstance(v, str) or not v or "\0" in v or len(v.encode()) > 65535:
        return False
    levels = v.split("/")
    for i, level in enumerate(levels):
        if "+" in level and level != "+":
            return False
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
    return True


def publish_topic(v: Any) -> bool:
    return subscribe_topic(v) and "+" not in v and "#" not in v


Rule = Callable[[Any], bool]
AVAILABILITY: dict[str, Rule] = {
    "availability_topic": subscribe_topic, "availability_template": _str,
    "payload_available": _str, "payload_not_available": _str,
    "availability_mode": lambda v: v in AVAILABILITY_MODES,
    "availability": lambda v: isinstance(v, list) and all(isinstance(a, dict) for a in v),
}  # fmt: skip
BASE: dict[str, Rule] = {"qos": lambda v: v in (0, 1, 2), "encoding": _str}
RO = {**BASE, "state_topic": subscribe_topic, "value_template": _str}
COMMON: dict[str, Rule] = {
    **AVAILABILITY, "device": lambda v: isinstance(v, dict),
    "origin": lambda v: isinstance(v, dict),
    "entity_picture": _url, "enabled_by_default": _bool,
    "entity_category": lambda v: v in ENTITY_CATEGORIES, "icon": _icon,
    "json_attributes_topic": subscribe_topic, "json_attributes_template": _str,
    "default_entity_id": _str, "message_expiry_interval": _positive_int, "unique_id": _str,
    "visible_by_default": _bool,
}  # fmt: skip
PLATFORMS: dict[str, dict[str, Rule]] = {
    "sensor": {
        **RO, **COMMON, "device_class": lambda v: v is None or v in SENSOR_DEVICE_CLASSES,
        "expire_after": _positive_int, "force_update": _bool,
        "last_reset_value_template": _str, "name": _opt_str,
        "options": lambda v: isinstance(v, list), "suggested_display_precision": _positive_int,
        "state_class": lambda v: v is None or v in STATE_CLASSES, "unit_of_measurement": _opt_str,
    },
    "image": {
        **BASE, **COMMON, "content_type": _str, "name": _opt_str, "url_topic": subscribe_topic,
        "image_topic": subscribe_topic, "image_encoding": lambda v: v == "b64",
        "url_template": _str,
    },
    "event": {
        **RO, **COMMON, "device_class": lambda v: v in EVENT_DEVICE_CLASSES, "name": _opt_str,
        "event_types": _str_list,
    },
    # homeassistant/components/mqtt/binary_sensor.py PLATFORM_SCHEMA_MODERN
    "binary_sensor": {
        **RO, **COMMON, "name": _opt_str, "expire_after": _positive_int,
        "force_update": _bool, "off_delay": _positive_int, "payload_on": _str,
        "payload_off": _str,
        "device_class": lambda v: v is None or v in BINARY_SENSOR_DEVICE_CLASSES,
    },
}  # fmt: skip
REQUIRED = {
    "sensor": ("state_topic",), "image": (), "event": ("state_topic", "event_types"),
    "binary_sensor": ("state_topic",),
}  # fmt: skip
TOP_LEVEL: dict[str, Rule] = {
    **AVAILABILITY, "device": lambda v: isinstance(v, dict),
    "components": lambda v: isinstance(v, dict), "origin": lambda v: isinstance(v, dict),
    "state_topic": subscribe_topic, "command_topic": publish_topic,
    "message_expiry_interval": _positive_int, **BASE,
}  # fmt: skip
SHARED_OPTIONS = (
    "availability", "availability_mode", "availability_template", "availability_topic",
    "command_topic", "encoding", "message_expiry_interval", "payload_available",
    "payload_not_available", "state_topic", "qos",
)  # fmt: skip


def expand(payload: Mapping[str, Any], table: Mapping[str, str], where: str) -> dict[str, Any]:
    """discovery.py _replace_abbreviations; both forms of one key is refused (HA keeps one)."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        full = table.get(key, key)
        if full in out:
            raise Invalid(f"{where}: {key!r} and {full!r} are the same option")
        out[full] = value
    return out


def _check_keys(config: Mapping[str, Any], rules: Mapping[str, Rule], where: str) -> None:
    for key, value in config.items():
        if key not in rules:
            raise Invalid(f"{where}: unknown option {key!r}")
        if not rules[key](value):
            raise Invalid(f"{where}: {key!r} has an invalid value {value!r}")
    if "availability_topic" in config and "availability" in config:
        raise Invalid(f"{where}: availability_topic and availability are exclusive")


def _check_platform(platform: str, config: dict[str, Any], where: str) -> None:
    _check_keys(config, PLATFORMS[platform], where)
    for key in REQUIRED[platform]:
        if key not in config:
            raise Invalid(f"{where}: required option {key!r} is missing")
    if platform == "image":  # image.py validate_topic_required
        if ("image_topic" in config) == ("url_topic" in config):
            raise Invalid(f"{where}: expected exactly one of image_topic, url_topic")
        if "content_type" in config and "url_topic" in config:
            raise Invalid(f"{where}: content_type cannot be used with url_topic")
    if platform == "sensor":  # sensor.py validate_sensor_state_and_device_class_config
        if "last_reset_value_template" in config and config.get("state_class") != "total":
            raise Invalid(f"{where}: last_reset_value_template needs state_class total")
        if "options" in config:
            if not config["options"]:
                raise Invalid(f"{where}: an empty options list is not allowed")
            if config.get("state_class") or config.get("unit_of_measurement"):
                raise Invalid(f"{where}: options with state_class or unit_of_measurement")
            if config.get("device_class") != "enum":
                raise Invalid(f"{where}: options need device_class enum")


def check_device_message(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a device discovery payload as HA would; return each component's config as HA
    hands it to the platform (abbreviations expanded, shared options merged). Raises Invalid."""
    top = expand(payload, ABBREVIATIONS, "device message")
    _check_keys(top, TOP_LEVEL, "device message")
    for key in ("device", "origin", "components"):
        if key not in top:
            raise Invalid(f"device message: required option {key!r} is missing")
    device = expand(top["device"], DEVICE_ABBREVIATIONS, "device")
    rules = {k: _str for k in DEVICE_KEYS} | {"identifiers": _str_list, "connections": _conns}
    _check_keys(device, rules, "device")
    if not (device.get("identifiers") or device.get("connections")):
        raise Invalid("device: needs at least one of identifiers, connections")
    origin = expand(top["origin"], ORIGIN_ABBREVIATIONS, "origin")
    _check_keys(origin, {"name": _str, "sw_version": _str, "support_url": _url}, "origin")
    if "name" not in origin:
        raise Invalid("origin: required option 'name' is missing")
    out: dict[str, dict[str, Any]] = {}
    for cid, raw in top["components"].items():
        where = f"component {cid!r}"
        if not SAFE_ID.fullmatch(cid):
            raise Invalid(f"{where}: id must match [a-zA-Z0-9_-]+")
        if not isinstance(raw, dict):
            raise Invalid(f"{where}: expected a mapping, got {type(raw).__name__}")
        config = expand(raw, ABBREVIATIONS, where)
        platform = config.pop("platform", None)
        if platform not in PLATFORMS:
            raise Invalid(f"{where}: platform {platform!r} is not one of {sorted(PLATFORMS)}")
        if not config:  # only the platform: HA removes the entity
            out[cid] = {"platform": platform}
            continue
        if "unique_id" not in config:  # schemas.py check_unique_id
            raise Invalid(f"{where}: an entity component needs unique_id")
        for key in ("device", "origin"):
            if key in config:
                raise Invalid(f"{where}: {key!r} is set by the device message only")
        for key in SHARED_OPTIONS:
            if key in top and key not in config:
                config[key] = top[key]
        _check_platform(platform, config, where)
        out[cid] = {"platform": platform, **config}
    ids = [c["unique_id"] for c in out.values() if "unique_id" in c]
    if len(ids) != len(set(ids)):
        raise Invalid("device message: unique_id values are not unique")
    return out


def _conns(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in v
    )
