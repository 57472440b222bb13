"""The agent's MQTT side put together from its config: the disk outbox in ``state_dir``, the
command router (signed when ``mqtt.commands.public_keys`` is set), Home Assistant discovery,
the stats reporter and the publisher that drives them (publisher.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.health.stats import StatsRegistry
from edge_agent.health.system import SystemSensors
from edge_agent.publish.commands import CommandRouter, Handler
from edge_agent.publish.ha_inputs import discovery_inputs
from edge_agent.publish.outbox import Outbox
from edge_agent.publish.publisher import MqttPublisher, new_run_id
from edge_agent.publish.stats_payload import StatsReporter

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

log = logging.getLogger(__name__)

#: Where the outbox lives in ``state_dir`` unless ``mqtt.outbox.path`` says otherwise.
OUTBOX_FILE = "outbox/outbox.db"
#: The last accepted signed-command sequence number.
COMMAND_STATE_FILE = "commands.json"


def open_outbox(cfg: AgentConfig) -> Outbox:
    """The disk outbox; a damaged file is moved aside (and said in the log), never fatal."""
    box = cfg.mqtt.outbox
    path = box.path if box.path is not None else cfg.state_dir / OUTBOX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(
        path,
        max_bytes=box.max_bytes,
        max_age_s=box.max_age_s,
        commit_interval_s=box.commit_interval_s,
        synchronous="FULL" if box.synchronous == "full" else "NORMAL",
    )
    if outbox.recovered_from is not None:
        log.error("the outbox %s was damaged: moved to %s; starting empty",
                  path, outbox.recovered_from)  # fmt: skip
    if outbox.depth:
        log.info("the outbox holds %d message(s) from before; sending them first", outbox.depth)
    return outbox


def build_publisher(
    cfg: AgentConfig,
    *,
    agent_version: str,
    model: Mapping[str, object] | None,
    labels: list[str],
    stats: StatsRegistry,
    handlers: Mapping[str, Handler],
    publish_skipped: Collection[str] = (),
) -> MqttPublisher:
    """Everything the MQTT side needs; nothing connects until ``start()``."""
    run_id = new_run_id()
    outbox = open_outbox(cfg)
    router = None
    if cfg.mqtt.commands.enabled:
        auth = None
        if cfg.mqtt.commands.public_keys:
            from edge_agent.publish.command_auth import CommandAuth  # cryptography

            auth = CommandAuth(
                cfg.device_id,
                cfg.mqtt.commands.public_keys,
                cfg.state_dir / COMMAND_STATE_FILE,
            )
        router = CommandRouter(
            cfg.mqtt.topic_prefix,
            cfg.device_id,
            handlers,
            max_bytes=cfg.mqtt.commands.max_bytes,
            auth=auth,
        )
    zone = cfg.health.thermal.thermal_zone
    sensors = SystemSensors(cpu_zone=Path(zone) if zone else None)
    reporter_started = time.monotonic()
    reporter = StatsReporter(stats, run_id, started=reporter_started, system=sensors.read)

    # get_stats has its own reporter: its rates cover the time since the last get_stats, and
    # asking never shortens the interval of the published message (a reporter is one thread's).
    asked = StatsReporter(stats, run_id, started=reporter_started, system=sensors.read)
    query_lock = threading.Lock()

    def stats_payload() -> dict[str, Any]:
        return reporter.payload(outbox, publisher.drop_totals, publisher.link_figures)

    def stats_query() -> dict[str, Any]:
        with query_lock:
            return asked.payload(outbox, publisher.drop_totals, publisher.link_figures)

    ha = cfg.mqtt.home_assistant
    publisher = MqttPublisher(
        cfg.mqtt,
        cfg.device_id,
        agent_version,
        dict(model) if model is not None else None,
        [s.id for s in cfg.sources],
        stats=stats,
        publish_skipped=publish_skipped,
        outbox=outbox,
        run_id=run_id,
        router=router,
        discovery=discovery_inputs(cfg, labels, agent_version, model) if ha.discovery else None,
        state_dir=cfg.state_dir,
        stats_payload=stats_payload,
        stats_query=stats_query,
    )
    return publisher
