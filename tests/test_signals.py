"""Signals are acted on in a relay thread, never in the handler: a signal that arrives while
the main thread holds a lock its action needs is handled once the lock is free, instead of
the handler waiting for its own thread forever (the watchdog's lock hung a SIGTERM in CI)."""

from __future__ import annotations

import os
import signal
import threading
import time

from edge_agent.cli.common import stop_on_signals
from edge_agent.cli.signals import relayed_signals


def test_a_signal_while_the_main_thread_holds_the_lock_is_acted_on_after() -> None:
    lock = threading.Lock()
    done = threading.Event()
    seen: list[str] = []

    def action(sig: signal.Signals) -> None:
        with lock:  # taken in the handler itself, this would never return
            seen.append(sig.name)
        done.set()

    with relayed_signals({signal.SIGUSR1: action}):
        with lock:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.2)  # the handler runs here, in this thread, under the lock
            assert seen == []  # not acted on while the lock is held
        assert done.wait(5)
    assert seen == ["SIGUSR1"]


def test_the_old_handlers_come_back_and_pending_signals_are_acted_on_first() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stopped = threading.Event()
    with stop_on_signals(stopped.set):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.is_set()  # leaving the block waited for the relay
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failing_action_does_not_end_the_relay() -> None:
    calls: list[int] = []

    def action(_sig: signal.Signals) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first one fails")

    with relayed_signals({signal.SIGUSR2: action}):
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGUSR2)
    assert calls == [1, 1]
