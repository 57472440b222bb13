"""Another client taking this device's MQTT session: said once, loudly, then backed off.

What the broker does (measured against mosquitto 2.0.11, tests/test_mqtt_takeover.py): when a
second client connects with our client id, mosquitto closes our socket *without* a DISCONNECT
packet, for MQTT 5 as for 3.1.1 (its log: "Client X already connected, closing old
connection"). paho then reports reason code 128, "Unspecified error": the code it gives any lost
connection. Both agents reconnect within ``reconnect_max_delay_s`` and take the session back in
turn, each logging "broker unreachable" every 2 s, which hides the cause. A broker that does send
DISCONNECT with reason 142 ("Session taken over", MQTT 5) is believed at once.

The rule otherwise (both protocols): TAKEOVER_DROPS links in a row that the broker accepted and
then closed within ``short_s`` of the CONNACK, with no failed connect attempt in between (a
broker that went away refuses the reconnect; a taker leaves it open). Then one ERROR and long
reconnect waits (TAKEOVER_WAIT_S, doubling up to TAKEOVER_MAX_WAIT_S), so the other agent keeps
the session and works instead of both fighting. A link that lasts ``short_s`` ends the episode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("edge_agent.publish.client")

#: MQTT 5 DISCONNECT reason "Session taken over".
SESSION_TAKEN_OVER = 142
#: Short links in a row that make the 3.1.1 heuristic (and MQTT 5 without reason 142) say it:
#: three rules out one unlucky drop right after a reconnect.
TAKEOVER_DROPS = 3
#: A link the broker closed sooner than this after accepting it is "short", s; at least twice
#: the longest reconnect wait, which is how long the other agent takes to take it back.
SHORT_LINK_MIN_S = 10.0
#: First reconnect wait once taken over, s; long beside SHORT_LINK_MIN_S, so the other agent's
#: link counts as long and it does not back off too (one of the two keeps working).
TAKEOVER_WAIT_S = 60.0
#: Longest reconnect wait while taken over, s.
TAKEOVER_MAX_WAIT_S = 600.0


def takeover_message(client_id: str, device_id: str | None) -> str:
    who = f"device_id {device_id!r}" if device_id else f"mqtt.client_id {client_id!r}"
    return (
        f"another client took this device's MQTT session (client id {client_id!r}): "
        f"is a second agent running with {who}?"
    )


class TakeoverWatch:
    """Tells a session taken over from a broker that went away. Thread-safe; paho's network
    thread calls ``connected``, ``dropped`` and ``attempt_failed``."""

    def __init__(
        self,
        client_id: str,
        device_id: str | None,
        reconnect_max_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.device_id = device_id
        self.short_s = max(SHORT_LINK_MIN_S, 2 * reconnect_max_delay_s)
        self.first_wait_s = max(TAKEOVER_WAIT_S, 3 * self.short_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._up_since: float | None = None
        self._short_drops = 0
        self._episodes = 0  # backed-off reconnects in the current takeover
        #: Times a takeover was declared since start (for the stats).
        self.count = 0

    @property
    def taken_over(self) -> bool:
        """True from the declaration until a link lasts ``short_s`` again."""
        return self._episodes > 0

    def connected(self) -> None:
        with self._lock:
            self._up_since = self._clock()

    def attempt_failed(self) -> None:
        """A connect attempt failed (refused, no route): the broker is away, not taken."""
        with self._lock:
            self._short_drops = 0

    def dropped(self, reason_code: int | None, from_server: bool) -> float | None:
        """The link that was up ended (not by us). Returns the wait before the next attempt
        when this is a takeover (the caller sets it and stays quiet), else None."""
        with self._lock:
            now = self._clock()
            lived = None if self._up_since is None else now - self._up_since
            self._up_since = None
            if lived is not None and lived >= self.short_s:  # a real link: any episode is over
                if self._episodes:
                    log.info("MQTT session kept for %.0f s: no other client took it", lived)
                self._short_drops, self._episodes = 0, 0
            told = from_server and reason_code == SESSION_TAKEN_OVER
            if told or (lived is not None and lived < self.short_s):
                self._short_drops += 1
            if not told and self._short_drops < TAKEOVER_DROPS:
                return None
            first = self._episodes == 0
            wait = min(TAKEOVER_MAX_WAIT_S, self.first_wait_s * 2 ** min(self._episodes, 30))
            self._episodes += 1
            if first:
                self.count += 1
        if first:
            how = (
                "the broker said so (reason code 142)"
                if told
                else f"the broker closed {TAKEOVER_DROPS} links in a row within "
                f"{self.short_s:g} s of accepting them"
            )
            log.error(
                "%s (%s); reconnecting every %.0f s or more, not fighting over it",
                takeover_message(self.client_id, self.device_id),
                how,
                wait,
            )
        else:
            log.debug("MQTT session taken again; next attempt in %.0f s", wait)
        return wait
