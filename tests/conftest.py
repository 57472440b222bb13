"""Shared fixtures: a real mosquitto broker per test and a recording MQTT subscriber
(the classes are in tests/helpers/mqtt.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.mqtt import Broker, Recorder


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's agents (in-process and subprocesses) default to a state folder of their
    own: the default ($STATE_DIRECTORY, else ~/.local/state/edgesight) holds the outbox, and a
    backlog one test leaves (its broker gone) would be sent first by the next test's agent."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "default-state"))


def _start_broker(tmp_path: Path, persistence: bool) -> Iterator[Broker]:
    workdir = tmp_path / f"mosquitto-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    broker = Broker(workdir, persistence=persistence)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto on a free 127.0.0.1 port, no persistence; stopped at teardown."""
    yield from _start_broker(tmp_path, persistence=False)


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    """Like ``broker``, but sessions and queued messages survive stop()/start()."""
    yield from _start_broker(tmp_path, persistence=True)


@pytest.fixture
def mqtt_recorder() -> Iterator[Callable[..., Recorder]]:
    """Factory: ``mqtt_recorder(broker, "edgesight/#")`` -> a subscribed Recorder (QoS 1).

    Pass ``persistent_session=True`` (with ``persistent_broker``) to keep the subscription and
    the QoS 1 messages queued for it across a broker restart. All are closed at teardown.
    """
    made: list[Recorder] = []

    def factory(broker: Broker, topic_filter: str, persistent_session: bool = False) -> Recorder:
        recorder = Recorder(broker, topic_filter, persistent_session)
        made.append(recorder)
        return recorder

    yield factory
    for recorder in made:
        recorder.close()
