"""The stats topic from a running agent over a real mosquitto: ``<prefix>/<device>/stats``,
retained, schema edgesight.stats/1, the status's run id, each running source's fps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.agent_run import (
    BASE,
    SOURCE,
    WAIT_S,
    Assets,
    agent_config,
    make_assets,
    online_run,
    running_agent,
    statuses,
    write_config,
)
from tests.helpers.mqtt import Broker

STATS = f"{BASE}/stats"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return make_assets(tmp_path_factory.mktemp("assets"))


def test_stats_arrive_retained_with_the_run_fps_and_outbox_depth(
    tmp_path: Path, broker: Broker, assets: Assets, mqtt_recorder: Any
) -> None:
    rec = mqtt_recorder(broker, f"{BASE}/#")
    cfg = agent_config(assets, broker, tmp_path / "state", stats_interval_s=1)
    with running_agent(write_config(tmp_path / "agent.yaml", cfg)):
        run = online_run(rec)
        # the second message covers an interval in which the source ran throughout
        assert rec.wait_for(lambda: len(rec.on(STATS)) >= 2, WAIT_S)
        late = mqtt_recorder(broker, STATS)
        assert late.wait_for(lambda: len(late.on(STATS)) >= 1, WAIT_S)
        retained = late.on(STATS)[0]
    assert retained.retain and retained.qos == 0
    first, second = rec.json(STATS)[:2]
    for stats in (first, second, json.loads(retained.payload)):
        assert stats["schema"] == "edgesight.stats/1"
        assert stats["run"] == run == statuses(rec)[0]["run"]
        assert isinstance(stats["outbox"]["depth"], int) and stats["outbox"]["depth"] >= 0
        assert stats["mqtt"]["connected"] is True
    assert second["sources"][SOURCE]["fps"] > 0
    assert second["sources"][SOURCE]["results"] > first["sources"][SOURCE]["results"] > 0
    assert second["uptime_s"] > first["uptime_s"]
