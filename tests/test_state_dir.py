"""One agent per state folder: a second agent started on the same ``state_dir`` (its outbox
is locked) stops at once with exit code 2 and says why, and the first one runs on."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.agent_run import (
    agent_config,
    agent_process,
    make_assets,
    online_run,
    write_config,
)
from tests.helpers.mqtt import Broker, Recorder

WAIT_S = 30


def test_a_second_agent_on_the_same_state_dir_is_refused(
    tmp_path: Path, broker: Broker, mqtt_recorder: type[Recorder]
) -> None:
    assets = make_assets(tmp_path / "assets")
    rec = mqtt_recorder(broker, "#")
    config = write_config(tmp_path / "agent.yaml", agent_config(assets, broker, tmp_path / "state"))
    with agent_process(config, tmp_path / "first.log") as first:
        online_run(rec)  # the first agent runs and holds the outbox
        with agent_process(config, tmp_path / "second.log") as second:
            assert second.wait(WAIT_S) == 2
        log = (tmp_path / "second.log").read_text()
        assert "in use by another process" in log and "state_dir" in log
        assert "Traceback" not in log
        assert first.poll() is None  # the first one is not disturbed
