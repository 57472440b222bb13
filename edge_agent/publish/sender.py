"""The sender: moves the disk outbox (outbox.py) to the broker, oldest first.

It hands paho at most ``window`` messages that the broker has not acknowledged yet and deletes
each from the outbox only when paho reports it acknowledged (PUBACK for QoS 1, written to the
socket for QoS 0). paho itself re-sends its unacknowledged messages after a reconnect (the
session is persistent), so the sender only waits while the link is down; should paho's client
be replaced (``MqttClient.check_alive``), ``restart`` hands everything unacknowledged again.
What was handed but not acknowledged when the process dies is still in the outbox and is sent
again at the next start: consumers see duplicates only, never gaps (de-duplicate by ``(run,
source, seq)``).

Acknowledgements are read from paho's ``MQTTMessageInfo`` of each message (``is_published``),
not matched by message id: ids are reused, control messages share them, and an acknowledgement
can arrive before ``publish`` has returned the id. paho's ``on_publish`` only wakes the sender.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

#: Messages handed to paho and not yet acknowledged, at most: enough to keep a slow link busy,
#: few enough that paho's memory holds little.
WINDOW = 100
#: How often a waiting sender looks again without being woken, s (a missed wake-up costs this).
POLL_S = 0.5


class Entry(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...


class Queue(Protocol):
    """What the sender needs of the outbox."""

    def pending(self, after_id: int, limit: int) -> Sequence[Entry]: ...
    def ack(self, ids: Iterable[int]) -> None: ...
    def hold(self, through_id: int) -> None: ...


class Link(Protocol):
    """What the sender needs of the MQTT client."""

    @property
    def connected(self) -> bool: ...
    def publish_tracked(
        self, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Delivery | None: ...


class Delivery(Protocol):
    """paho's MQTTMessageInfo, as far as the sender reads it."""

    def is_published(self) -> bool: ...


class Sender:
    """One thread that publishes the outbox in order while the link is up."""

    def __init__(self, outbox: Queue, link: Link, window: int = WINDOW) -> None:
        self.outbox = outbox
        self.link = link
        self.window = window
        self._cond = threading.Condition()
        #: Handed to paho, in order: (outbox entry id, its delivery).
        self._inflight: list[tuple[int, Delivery]] = []
        self._last = 0  # the highest entry id handed to paho
        self._stop = False
        self._failing = False  # reading the outbox failed last time (logged once per streak)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wake(self) -> None:
        """Something was put in the outbox, or the link came back."""
        with self._cond:
            self._cond.notify_all()

    def restart(self) -> None:
        """paho's client was replaced: what it held is gone, hand everything again."""
        with self._cond:
            self._inflight.clear()
            self._last = 0
            self._cond.notify_all()
        self.outbox.hold(0)  # the new client holds nothing: the bounds may drop them again

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._inflight)

    def wait_drained(self, timeout_s: float, more: Callable[[], bool]) -> bool:
        """Wait until nothing is in flight and ``more()`` is False; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inflight and not more(), timeout_s)

    def on_published(self) -> None:
        """paho's network thread: some message was acknowledged (or, QoS 0, sent)."""
        with self._cond:
            self._cond.notify_all()

    def _settle(self) -> None:
        """Delete from the outbox what the broker acknowledged; hand again what paho says
        it will never send (its delivery raises), rather than let the thread die on it."""
        with self._cond:
            done: list[int] = []
            kept: list[tuple[int, Delivery]] = []
            failed: int | None = None
            for eid, d in self._inflight:
                acked = _acked(eid, d)
                if acked is None:
                    failed = eid if failed is None else min(failed, eid)
                elif acked:
                    done.append(eid)
                else:
                    kept.append((eid, d))
            if failed is not None:  # from there on, in order, as restart() does for all
                kept = [(e, d) for e, d in kept if e < failed]
                self._last = failed - 1
            if done or failed is not None:
                self._inflight = kept
                self._cond.notify_all()
        if done:
            self.outbox.ack(done)

    def _run(self) -> None:
        while True:
            self._settle()
            with self._cond:
                self._cond.wait_for(self._can_send, POLL_S)
                if self._stop:
                    return
                if not self._can_send():
                    continue
                room, after = self.window - len(self._inflight), self._last
            try:
                batch = self.outbox.pending(after, room)
            except Exception:  # a broken outbox must not end the thread: try again later
                if not self._failing:
                    log.exception("cannot read the outbox; retrying every %.1f s", POLL_S)
                self._failing = True
                with self._cond:
                    self._cond.wait(POLL_S)
                continue
            if self._failing:
                log.info("the outbox can be read again")
                self._failing = False
            if not batch:
                with self._cond:
                    if self._last == after and not self._acked_waiting():
                        self._cond.wait(POLL_S)
                continue
            self._hand(batch)

    def _acked_waiting(self) -> bool:
        """Something for _settle: acknowledged, or never to be (said once, by _settle)."""
        return any(_acked(eid, d, quiet=True) is not False for eid, d in self._inflight)

    def _can_send(self) -> bool:
        return (
            self._stop
            or self._acked_waiting()
            or (self.link.connected and len(self._inflight) < self.window)
        )

    def _hand(self, batch: Sequence[Entry]) -> None:
        for entry in batch:
            delivery = self.link.publish_tracked(
                entry.topic, entry.payload, entry.qos, entry.retain
            )
            if delivery is None:  # closed, or not accepted: try again from here later
                return
            with self._cond:
                self._last = entry.id
                self._inflight.append((entry.id, delivery))
            # In the client's hands now: it sends them after any outage, so the bounds must
            # not drop (and count) them.
            self.outbox.hold(entry.id)


def _acked(entry_id: int, delivery: Delivery, quiet: bool = False) -> bool | None:
    """Whether the broker acknowledged it; None when paho says it never will be sent."""
    try:
        return delivery.is_published()
    except (RuntimeError, ValueError) as exc:  # paho raises for a publish it did not keep
        if not quiet:
            log.warning("outbox entry %d was not kept by paho (%s); handing it again",
                        entry_id, exc)  # fmt: skip
        return None
