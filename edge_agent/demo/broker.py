"""A local MQTT broker for the demo: amqtt in its own thread and asyncio loop, loopback only.

``edge-agent demo`` starts one when no broker answers at the configured address, so the README's
first command needs no mosquitto. It allows anonymous clients, so it binds a loopback address
only and refuses any other. amqtt (MQTT 3.1.1, pure Python) is the optional ``demo`` extra,
imported by ``start()``; its default config binds 0.0.0.0:1883 and loads plugins we do not
want, so we always pass our own, bound to 127.0.0.1.

:func:`probe_mqtt` tells a broker that lets us in from a closed port, or from something else
listening there, by speaking one CONNECT/CONNACK exchange.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

log = logging.getLogger(__name__)

#: What to install when amqtt is missing.
INSTALL_HINT = "pip install 'edgesight[demo]'"
#: Longest wait for the broker to accept connections after start(), s.
START_TIMEOUT_S = 10.0
#: Longest wait for amqtt's shutdown and the loop thread in close(), s.
STOP_TIMEOUT_S = 5.0
#: Longest wait for a TCP connection and a CONNACK when probing a broker, s.
PROBE_TIMEOUT_S = 1.0
#: Poll interval while waiting for the port to open, s.
POLL_S = 0.02
#: How often close() re-cancels tasks that swallowed their cancellation (see _shutdown), s.
RECANCEL_EVERY_S = 0.1
#: Anonymous access is the only plugin: no $SYS topics, no packet logging.
PLUGINS: dict[str, dict[str, Any]] = {
    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
}
#: Level for amqtt's loggers unless the application set one (see start()).
AMQTT_LOG_LEVEL = logging.ERROR
#: MQTT 3.1.1 CONNACK return codes (section 3.2.2.3); the only place they become text.
CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
PROBE_CLIENT_ID = b"edgesight-probe"


class BrokerUnavailable(RuntimeError):
    """The embedded broker cannot run here: amqtt is missing or the port cannot be bound."""


def _connect_packet(client_id: bytes, keepalive_s: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and no login (spec section 3.1)."""
    variable = b"\x00\x04MQTT\x04\x02" + keepalive_s.to_bytes(2, "big")
    payload = len(client_id).to_bytes(2, "big") + client_id
    remaining = len(variable) + len(payload)
    if remaining > 127:  # one length byte is all we write
        raise ValueError(f"client id must be at most 115 bytes, but got {len(client_id)}")
    return bytes([0x10, remaining]) + variable + payload


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe_mqtt(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None if an MQTT broker at host:port accepts an anonymous MQTT 3.1.1 client; otherwise
    why not, in words ("connection refused", "not authorized", "no MQTT answer")."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_connect_packet(PROBE_CLIENT_ID))
            connack = _recv_exactly(sock, 4)
            if len(connack) < 4 or connack[0] != 0x20 or connack[1] != 2:
                return "something listens there but gave no MQTT answer"
            if connack[3] != 0:
                return f"the broker refused an anonymous client: {_connack_text(connack[3])}"
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def _connack_text(code: int) -> str:
    return f"{CONNACK_CODES.get(code, 'unknown reason')} (CONNACK code {code})"


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP listener could bind host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _shutdown(broker: Any) -> None:
    """``broker.shutdown()``, cancelling again any task that swallowed its cancellation.

    amqtt stops each client's handler by cancelling its reader task and waiting for it to end;
    the reader waits in ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation
    when a packet arrives at the same moment (python/cpython#86296, fixed in 3.12). The reader
    then reads on until the client's keep-alive runs out and shutdown hangs with the port still
    bound: 8 closes in 60 with a subscriber connected. A second cancel ends it.
    """
    shutdown = asyncio.ensure_future(broker.shutdown())
    while True:
        done, _ = await asyncio.wait([shutdown], timeout=RECANCEL_EVERY_S)
        if done:
            return shutdown.result()
        for task in asyncio.all_tasks():
            if task is not shutdown and task.cancelling():
                task.cancel()


class EmbeddedBroker:
    """amqtt on ``host:port`` (a loopback address; port 0 picks a free one), anonymous access.

    ``start()`` returns once the port accepts connections; ``close()`` shuts amqtt down and
    frees the port. Also a context manager. ``host`` and ``port`` are the address to connect
    to, so the object passes wherever a broker address is expected.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = START_TIMEOUT_S
    ) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"host must be a loopback IP address such as 127.0.0.1 (the embedded broker "
                f"lets anyone in), but got {host!r}"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, but got {port}")
        self.host = host
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None  # amqtt.broker.Broker, typed loosely: amqtt is optional
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        """Start amqtt in the thread "mqtt-broker" and wait until the port accepts connections.

        Raises BrokerUnavailable when amqtt is not installed, the port cannot be bound or the
        broker does not come up within ``start_timeout_s``.
        """
        if self._thread is not None:
            raise RuntimeError("EmbeddedBroker.start() may be called once")
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerUnavailable(
                f"the embedded MQTT broker needs amqtt, which is not installed: {INSTALL_HINT}"
            ) from exc
        if self.port == 0:
            self.port = free_port(self.host)
        elif not port_is_free(self.host, self.port):
            # Checked here, not left to amqtt, which would log a traceback before failing.
            raise BrokerUnavailable(
                f"cannot start the embedded MQTT broker: {self.host}:{self.port} is in use"
            )
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": PLUGINS,
        }
        amqtt_log = logging.getLogger("amqtt")
        if amqtt_log.level == logging.NOTSET:
            # amqtt warns about every PUBACK that reaches it after shutdown dropped its waiter,
            # and clients still subscribed at close() send some: noise on the demo's console.
            amqtt_log.setLevel(AMQTT_LOG_LEVEL)
        # Daemon: a caller that forgets close() must not keep the interpreter alive.
        self._thread = threading.Thread(
            target=self._run, args=(Broker, config), name="mqtt-broker", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        if not self._started.wait(self.start_timeout_s) or self._start_error is not None:
            self._thread.join(STOP_TIMEOUT_S)
            failure = self._start_error or f"not started within {self.start_timeout_s:g} s"
            raise BrokerUnavailable(
                f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {failure}"
            ) from self._start_error
        # A CONNECT/CONNACK, not a bare TCP connect: amqtt logs an error for a client that
        # connects and says nothing.
        while (refused := probe_mqtt(self.host, self.port, POLL_S * 10)) is not None:
            if time.monotonic() > deadline:
                self.close()
                raise BrokerUnavailable(
                    f"the embedded MQTT broker on {self.host}:{self.port} did not accept an "
                    f"MQTT client within {self.start_timeout_s:g} s ({refused})"
                )
            time.sleep(POLL_S)
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)

    def _run(self, broker_cls: Any, config: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                broker = broker_cls(config, loop=loop)
                loop.run_until_complete(broker.start())
            except Exception as exc:  # amqtt wraps a bind error (its __cause__) in BrokerError
                self._start_error = exc.__cause__ or exc
                return
            self._broker, self._loop = broker, loop
            self._started.set()
            loop.run_forever()
        finally:
            self._started.set()
            # Handlers of clients still connected at shutdown: cancel them, so closing the loop
            # does not warn about pending tasks.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def close(self) -> None:
        """Disconnect clients, stop listening and end the thread. Safe to call twice."""
        loop, broker, thread = self._loop, self._broker, self._thread
        self._loop = None
        if loop is not None and broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(_shutdown(broker), loop).result(STOP_TIMEOUT_S)
            except FutureTimeoutError:
                log.warning("embedded MQTT broker did not shut down within %.0f s", STOP_TIMEOUT_S)
            except Exception:
                log.exception("embedded MQTT broker failed while shutting down")
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.host}:{self.port})"
