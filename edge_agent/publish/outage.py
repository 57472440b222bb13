"""One broker link's outages: how many attempts of the current one failed (that sets paho's
next wait), when it began, and one warning per outage in words (client.py owns the link)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.config import MqttConfig
from edge_agent.publish.paho_support import probe

#: The client's logger: the outage is the connection's story in the log.
log = logging.getLogger("edge_agent.publish.client")


class Outages:
    def __init__(self, cfg: MqttConfig, where: str, closed: Callable[[], bool]) -> None:
        self.cfg = cfg
        self.where = where
        self._closed = closed
        self._lock = threading.Lock()
        self._failures = 0  # failed attempts (or drops) since the last accepted CONNACK
        self._since: float | None = None  # monotonic time the current outage began

    def failed(self, client: mqtt.Client, why: str | None) -> None:
        """Log the start of an outage once, in words (``why``, or a probe of the address when
        paho gives no reason); later failed attempts stay quiet. Sets the next wait."""
        with self._lock:
            self._failures += 1
            if self._closed():
                return
            first = self._since is None
            if first:
                self._since = time.monotonic()
        if first:
            reason = why if why is not None else probe(self.cfg.host, self.cfg.port)
            log.warning("broker %s unreachable: %s; will keep retrying", self.where, reason)
        self.set_next_wait(client)

    def ended(self, client: mqtt.Client) -> float | None:
        """A CONNACK was accepted: how long the outage lasted (None if there was none); the
        first wait after a later drop is short again."""
        with self._lock:
            self._failures = 0
            since, self._since = self._since, None
        self.set_next_wait(client)
        return None if since is None else time.monotonic() - since

    def hold(self, client: mqtt.Client, wait_s: float) -> None:
        """The next attempt in ``wait_s`` exactly, with no warning (the session was taken
        over: publish/takeover.py said so)."""
        with self._lock:
            self._failures += 1
        delay: Any = wait_s  # paho's hint says int; it adds any number of seconds to time()
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)

    def set_next_wait(self, client: mqtt.Client) -> None:
        """The wait before paho's next attempt: doubling with each failure of this outage, up
        to the maximum, less a random part of up to half of it."""
        cfg = self.cfg
        with self._lock:
            n = self._failures
        wait = min(cfg.reconnect_max_delay_s, cfg.reconnect_min_delay_s * 2 ** min(n, 30))
        wait *= random.uniform(0.5, 1.0)
        # paho waits its minimum first; setting both makes this exact wait the next one.
        client.reconnect_delay_set(min_delay=wait, max_delay=wait)
