"""Signal handling for the long-running commands (run, serve), with no lock in the handler.

Python runs a handler in the main thread between two bytecodes, possibly while that thread
holds a lock the handler's work needs (the systemd watchdog's, an Event's): the handler then
waits for itself forever. Seen in CI: a SIGTERM right after start, while the main thread was
inside the watchdog's lock, left the agent running until it was killed. So a handler only puts
the signal's number on a ``SimpleQueue`` (documented as safe to call from a signal handler) and
a relay thread does the work: logging, stopping, reloading.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

#: How long leaving the block waits for the relay to finish a signal that arrived in it, s.
RELAY_JOIN_S = 10.0

Action = Callable[[signal.Signals], None]


@contextmanager
def relayed_signals(actions: Mapping[signal.Signals, Action]) -> Iterator[None]:
    """Run ``actions[sig](sig)`` in a relay thread for each of these signals arriving inside
    the block; the old handlers come back after, once what arrived has been acted on. Use
    from the main thread (Python installs handlers there only)."""
    inbox: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def relay() -> None:
        while (signum := inbox.get()) is not None:
            sig = signal.Signals(signum)
            try:
                actions[sig](sig)
            except Exception:  # the next signal must still be acted on
                log.exception("handling %s failed", sig.name)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        inbox.put(signum)  # nothing else: see the module's docstring

    thread = threading.Thread(target=relay, name="signals", daemon=True)
    thread.start()
    previous = {s: signal.signal(s, on_signal) for s in actions}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        inbox.put(None)
        thread.join(RELAY_JOIN_S)
