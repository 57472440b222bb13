"""Home Assistant discovery on the wire: the device message (discovery.py builds it) published
retained at every connect and whenever Home Assistant says it is back (``homeassistant/status``
``online``), and entities that went away since the last one removed first.

What was last announced is kept in ``<state_dir>/home-assistant.json``: a zone, label or source
removed from the config while the agent was stopped still disappears from Home Assistant at the
next start. A missing or damaged file means nothing is removed (damaged: moved aside, logged).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.fsutil import move_aside, write_atomic
from edge_agent.publish import discovery

log = logging.getLogger(__name__)

#: Discovery messages are retained QoS 1 (Home Assistant reads them at its own start).
QOS = 1
STATE_FILE = "home-assistant.json"

Publish = Callable[[str, bytes, int, bool], object]


class Announcer:
    def __init__(self, inputs: discovery.DiscoveryInputs, state_dir: Path, publish: Publish):
        self.topic, self.payload = discovery.discovery_message(inputs)
        self.state_file = state_dir / STATE_FILE
        self._publish = publish
        self._lock = threading.Lock()

    def announce(self) -> None:
        """Remove what went away, then publish the current message. Never raises: discovery
        must not stop the agent (a failure is logged and tried again at the next connect)."""
        try:
            with self._lock:
                previous = self._previous()
                gone = discovery.removal_message(previous, (self.topic, self.payload))
                if gone is not None:
                    log.info(
                        "Home Assistant: removing %d entit(ies) no longer configured",
                        len(discovery.removed_components(previous, self.payload)),
                    )
                    self._publish(gone[0], _encode(gone[1]), QOS, True)
                self._publish(self.topic, _encode(self.payload), QOS, True)
                if previous != self.payload:
                    write_atomic(self.state_file, _encode(self.payload))
        except Exception:
            log.exception("Home Assistant discovery failed; trying again at the next connect")

    def _previous(self) -> dict[str, Any]:
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return {}
        previous = discovery.parse_previous(raw)
        if previous is None:
            aside = move_aside(self.state_file)
            log.warning("%s is damaged; moved to %s (nothing is removed this time)",
                        self.state_file, aside)  # fmt: skip
            return {}
        return previous


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
