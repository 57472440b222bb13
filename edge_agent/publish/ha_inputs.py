"""What Home Assistant discovery announces, read from the agent's config and the model's labels:
which count, zone, line and slot topics each source's stages publish, which event types its
``<src>/event`` can carry and whether it has a snapshot (discovery.py makes the entities)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_agent.config.sources import source_kind
from edge_agent.publish import discovery

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig, SourceConfig


def discovery_inputs(
    cfg: AgentConfig,
    labels: Sequence[str],
    agent_version: str,
    model: Mapping[str, object] | None,
) -> discovery.DiscoveryInputs:
    return discovery.DiscoveryInputs(
        device_id=cfg.device_id,
        topic_prefix=cfg.mqtt.topic_prefix,
        agent_version=agent_version,
        model=model,
        sources=tuple(_source(s, labels) for s in cfg.sources),
        stats=True,
        discovery_prefix=cfg.mqtt.home_assistant.prefix,
    )


def _source(src: SourceConfig, labels: Sequence[str]) -> discovery.SourceInputs:
    counted: tuple[str, ...] = ()
    zones: list[discovery.ZoneInputs] = []
    lines: list[str] = []
    slots: list[str] = []
    events: list[str] = []
    snapshot = False
    for stage in src.stages:
        options: Any = stage.options()
        if stage.type == "counts":
            counted = tuple(labels)
        elif stage.type == "zones":
            for zone in options.zones:
                zones.append(discovery.ZoneInputs(zone.name, tuple(zone.labels or labels)))
                if zone.loiter_s is not None:
                    events += discovery.LOITER_EVENT_TYPES
        elif stage.type == "lines":
            lines += [line.name for line in options.lines]
        elif stage.type == "slots":
            slots += [slot.name for slot in options.slots]
            events += discovery.SLOT_EVENT_TYPES
        elif stage.type == "events":
            events += discovery.CAMTRAP_EVENT_TYPES
        elif stage.type == "snapshot":
            snapshot = bool(options.publish)
    return discovery.SourceInputs(
        id=src.id,
        labels=counted,
        zones=tuple(zones),
        lines=tuple(lines),
        slots=tuple(slots),
        event_types=tuple(dict.fromkeys(events)),  # each once, in order
        snapshot=snapshot,
        live=source_kind(src) in ("camera", "stream"),
    )
