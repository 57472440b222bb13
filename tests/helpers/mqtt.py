"""A real mosquitto broker on a free 127.0.0.1 port (``stop()``/``start()`` simulate an outage
on the same port; ``persistence`` keeps sessions and queued QoS 1 messages on disk across a
restart) and a recording MQTT subscriber that keeps each message with its QoS and retain flag."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.demo.broker import free_port

#: Where Debian/Ubuntu's mosquitto package puts the broker (not on a non-root PATH).
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto",)
#: Longest wait for the broker to open or release its port, s.
BROKER_START_TIMEOUT_S = 10.0
BROKER_STOP_TIMEOUT_S = 10.0
#: Longest wait for a recorder to connect and get its SUBACK, s.
RECORDER_READY_TIMEOUT_S = 10.0
#: Poll interval while waiting, s.
POLL_S = 0.02


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in MOSQUITTO_PATHS if Path(p).is_file()), None
    )
    if found is None:
        pytest.fail(
            "mosquitto is not installed; the MQTT tests need a real broker: "
            "apt-get install -y mosquitto mosquitto-clients",
            pytrace=False,
        )
    return found


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """One mosquitto process on a fixed 127.0.0.1 port; stop() and start() it at will."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        persistence: bool = False,
        password_file: Path | None = None,
    ) -> None:
        """``password_file`` (made with ``mosquitto_passwd``) turns anonymous access off."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.log_file = workdir / "mosquitto.log"
        self.conf_file = workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous false" if password_file else "allow_anonymous true",
            # Run as root, mosquitto switches to the "mosquitto" user unless told to stay root;
            # staying root lets it write the persistence file in our tmp dir.
            "user root",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        if password_file:
            lines.append(f"password_file {password_file}")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        else:
            lines.append("persistence false")
        self.conf_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start mosquitto (again) on the same port and wait until it accepts connections."""
        if self.running:
            raise RuntimeError(f"broker on port {self.port} is already running")
        binary = _mosquitto_binary()
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.conf_file)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while not _port_open(self.host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto did not start on port {self.port}:\n{self.log()}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """SIGTERM the broker by PID and wait for it to exit (SIGKILL if it hangs)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the broker and wait for it to die: no clean shutdown, no save of the
        persistence file, so a start() afterwards shows what an unclean death leaves."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"Broker({self.host}:{self.port}, running={self.running})"


@dataclass(frozen=True)
class Message:
    """One message as a subscriber received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Recorder:
    """A subscribed paho client that keeps every message it receives, in order."""

    def __init__(self, broker: Broker, topic_filter: str, persistent_session: bool) -> None:
        self.topic_filter = topic_filter
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        client_id = f"recorder-{uuid.uuid4().hex[:10]}"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent_session,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(RECORDER_READY_TIMEOUT_S):
            self.close()
            raise TimeoutError(f"recorder could not subscribe to {topic_filter!r} on {broker}")

    # Subscribing in on_connect renews the subscription after the broker restarts.
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any):
        if not rc.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any):
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    @property
    def messages(self) -> list[Message]:
        """A snapshot of everything received so far."""
        with self._cond:
            return list(self._messages)

    def on(self, topic: str) -> list[Message]:
        """The messages received on exactly this topic."""
        return [m for m in self.messages if m.topic == topic]

    def json(self, topic: str) -> list[Any]:
        """The decoded JSON payloads received on exactly this topic, in order."""
        return [json.loads(m.payload) for m in self.on(topic)]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10) -> bool:
        """Wait until ``predicate()`` (no arguments) is true; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
