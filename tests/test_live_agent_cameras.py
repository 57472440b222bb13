"""`edge-agent run` with a real camera and a real broker, as a user runs it: a frozen MJPEG
camera shows in the retained status (the source stalled, then reconnecting, the agent degraded),
its return clears it, SIGTERM during a stall ends the agent at once, and the log at INFO says
what happened in our words with no raw OpenCV/FFmpeg line."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.agent_run import (
    BASE,
    WAIT_S,
    agent_config,
    agent_process,
    make_assets,
    statuses,
    write_config,
)
from tests.helpers.mjpeg_server import MjpegCamera
from tests.helpers.mqtt import Broker, Recorder

STATUS = f"{BASE}/status"
#: The documented bound (docs/sources.md): SIGTERM during a stall ends the agent this fast,
#: plus room for a loaded CI machine.
STOP_WITHIN_S = 5.0


def gate_state(rec: Recorder) -> tuple[str | None, str | None, str | None]:
    """(agent state, gate's state, gate's reason) of the newest status."""
    found = statuses(rec)
    if not found:
        return None, None, None
    last: dict[str, Any] = found[-1]
    gate = last.get("source_state", {}).get("gate") or {}
    return last.get("state"), gate.get("state"), gate.get("reason")


def test_a_frozen_camera_in_the_status_and_sigterm_during_the_stall(
    tmp_path: Path, broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> None:
    assets = make_assets(tmp_path / "assets")
    rec = mqtt_recorder(broker, f"{BASE}/#")
    with MjpegCamera() as cam:
        source = {"id": "gate", "uri": cam.url, "capture_timeout_s": 1.5, "fps_limit": 10}
        cfg = agent_config(assets, broker, tmp_path / "state", [source], heartbeat_s=1)
        config = write_config(tmp_path / "agent.json", cfg)
        log_file = tmp_path / "agent.log"
        with agent_process(config, log_file) as proc:
            assert rec.wait_for(lambda: gate_state(rec)[:2] == ("online", "streaming"), WAIT_S), (
                statuses(rec)[-3:],
                log_file.read_text(),
            )
            cam.freeze()
            try:
                assert rec.wait_for(
                    lambda: (
                        gate_state(rec)[0] == "degraded"
                        and gate_state(rec)[1] in ("stalled", "reconnecting", "failed")
                    ),
                    WAIT_S,
                ), statuses(rec)[-3:]
                assert gate_state(rec)[2], "a down source says why"
            finally:
                cam.resume()
            assert rec.wait_for(lambda: gate_state(rec)[:2] == ("online", "streaming"), WAIT_S), (
                statuses(rec)[-3:]
            )
            cam.freeze()
            try:
                time.sleep(1.0)  # a read is now blocked in FFmpeg
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(WAIT_S)
                took = time.monotonic() - start
            finally:
                cam.resume()
        log = log_file.read_text()
    assert code == 0, log
    assert took < STOP_WITHIN_S, f"SIGTERM during a stall took {took:.1f} s\n{log}"
    assert rec.wait_for(lambda: gate_state(rec)[0] == "offline", WAIT_S)
    assert "source gate: lost" in log and "streaming again" in log, log
    raw = [line for line in log.splitlines() if line.startswith(("[ WARN", "[http @", "[tcp @"))]
    assert not raw, f"backend lines on stderr at INFO: {raw}"
    assert "Traceback" not in log and "terminate called" not in log, log
