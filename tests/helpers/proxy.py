"""A loopback TCP proxy that injects link faults between an MQTT client and its broker.

Tests put it between the agent and mosquitto to do to the link what the field does: reset it
(``reset()``, RST to both ends), let it die silently (``blackhole(True)``, which only keepalive
can notice) or make the broker look down (``refuse(True)``). One thread runs a selector over
every socket; the test thread's calls run on that thread and return once done, so after
``reset()`` returns the connections really are closed.

Usage::

    with FaultProxy(broker.host, broker.port) as proxy:
        client.connect("127.0.0.1", proxy.port)
        proxy.reset()
"""

from __future__ import annotations

import collections
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

#: Largest read from one socket per wakeup, bytes; a link reads again only once this is sent,
#: so a slow reader holds back its writer (TCP backpressure) instead of growing a buffer.
CHUNK_BYTES = 65536
#: Longest wait for the target to accept a new upstream connection, s (loopback: instant).
CONNECT_TIMEOUT_S = 2.0
#: Longest wait for the proxy thread to run a call from the test thread, s.
CALL_TIMEOUT_S = 10.0
#: SO_LINGER on, 0 s: close() then sends RST instead of FIN, the way a dropped link looks.
_LINGER_RST = struct.pack("ii", 1, 0)


def _close_rst(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass  # already dead; close() below is all that is left to do
    sock.close()


class _Pipe:
    """One direction of a link: bytes read from ``src`` wait in ``buf`` until ``dst`` takes them."""

    def __init__(self, src: socket.socket, dst: socket.socket | None) -> None:
        self.src = src
        self.dst = dst
        self.buf = bytearray()
        self.eof = False  # src sent FIN
        self.done = False  # the FIN was passed on (dst shut for writing)


class _Link:
    """One accepted client connection and its upstream connection to the target.

    ``upstream`` is None for a connection accepted while the blackhole was on: it never
    reached the target, as if its SYN had been lost.
    """

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.pipes = (_Pipe(client, upstream), _Pipe(upstream, client)) if upstream else ()

    def sockets(self) -> list[socket.socket]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port``, one upstream per connection."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        if not isinstance(target_port, int) or not 0 < target_port < 65536:
            raise ValueError(f"target_port must be an int in 1..65535, got {target_port!r}")
        if not target_host:
            raise ValueError("target_host must be a host name or address, got an empty string")
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self._lock = threading.Lock()
        self._calls: collections.deque[tuple[Callable[[], None], threading.Event]] = (
            collections.deque()
        )
        self._links: dict[socket.socket, _Link] = {}  # every socket of a link -> its link
        self._interest: dict[socket.socket, int] = {}  # what the selector watches now
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._crash: BaseException | None = None
        self._blackhole = False
        self._refuse = False
        self._accepted = 0
        self._refused = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen on a free port of ``listen_host`` and start the forwarding thread."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy.start() called twice; make a new proxy instead")
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((self.listen_host, 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Reset every connection, stop the thread and close every socket (idempotent)."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._call(self._stop_in_loop)
        self._thread.join(CALL_TIMEOUT_S)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Close every current connection with RST at both ends; new ones are accepted."""
        self._call(self._reset_all)

    def blackhole(self, on: bool) -> None:
        """While on, nothing moves in either direction, on old or new connections.

        Bytes wait in the kernel buffers (the peers' writes succeed, as over a dead link
        until TCP gives up), so only an application keepalive notices. When lifted, old
        connections carry on intact, as TCP would after retransmitting; connections accepted
        meanwhile never reached the target and are reset, so the client connects again.
        """
        self._call(lambda: self._set_blackhole(on))

    def refuse(self, on: bool) -> None:
        """While on, close each new connection at once with RST (the broker is down);
        connections already open carry on."""

        def set_refuse() -> None:
            self._refuse = on

        self._call(set_refuse)

    # -- state -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (known once started)."""
        if self._listener is None:
            raise RuntimeError("FaultProxy has no port before start()")
        return int(self._listener.getsockname()[1])

    @property
    def connections(self) -> int:
        """Connections accepted since start, refused ones included."""
        with self._lock:
            return self._accepted

    @property
    def refused(self) -> int:
        """Connections closed at once because ``refuse(True)`` was on."""
        with self._lock:
            return self._refused

    @property
    def active(self) -> int:
        """Client connections open now."""
        with self._lock:
            return len({id(link) for link in self._links.values()})

    # -- the proxy thread ------------------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the proxy thread and wait for it: only that thread touches sockets."""
        if self._thread is None or self._wake_w is None:
            raise RuntimeError("FaultProxy is not started; call start() first")
        done = threading.Event()
        with self._lock:
            self._calls.append((fn, done))
        self._wake_w.send(b"\0")
        while not done.wait(0.05):
            if not self._thread.is_alive():
                break
        if self._crash is not None or not done.is_set():
            raise RuntimeError("the fault proxy thread has died") from self._crash

    def _run(self) -> None:
        assert self._selector is not None
        try:
            while self._running:
                for key, events in self._selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        self._run_calls()
                    elif sock is self._listener:
                        self._accept()
                    elif sock in self._links:  # may have closed earlier in this batch
                        self._service(self._links[sock], sock, events)
        except BaseException as exc:  # kept for the test thread, which raises it
            self._crash = exc
            self._stop_in_loop()
            raise
        finally:
            with self._lock:
                pending, self._calls = list(self._calls), collections.deque()
            for _, done in pending:
                done.set()

    def _run_calls(self) -> None:
        assert self._wake_r is not None
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn, done = self._calls.popleft()
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            self._accepted += 1
            if self._refuse:
                self._refused += 1
        if self._refuse:
            _close_rst(client)
            return
        upstream = None
        if not self._blackhole:
            upstream = self._connect_upstream(client)
            if upstream is None:
                return
        client.setblocking(False)
        self._add(_Link(client, upstream))

    def _connect_upstream(self, client: socket.socket) -> socket.socket | None:
        """A connection to the target, or None (client reset) when the target is down."""
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            _close_rst(client)
            return None
        upstream.setblocking(False)
        return upstream

    def _add(self, link: _Link) -> None:
        with self._lock:
            for sock in link.sockets():
                self._links[sock] = link
        self._watch(link)

    def _drop(self, link: _Link, rst: bool) -> None:
        assert self._selector is not None
        with self._lock:
            for sock in link.sockets():
                self._links.pop(sock, None)
        for sock in link.sockets():
            if self._interest.pop(sock, 0):
                self._selector.unregister(sock)
            if rst:
                _close_rst(sock)
            else:
                sock.close()

    def _watch(self, link: _Link) -> None:
        """Point the selector at what each socket of ``link`` can do next."""
        assert self._selector is not None
        want = dict.fromkeys(link.sockets(), 0)
        if not self._blackhole:
            for pipe in link.pipes:
                if not pipe.eof and not pipe.buf:
                    want[pipe.src] |= selectors.EVENT_READ
                if pipe.buf and pipe.dst is not None:
                    want[pipe.dst] |= selectors.EVENT_WRITE
        for sock, mask in want.items():
            have = self._interest.get(sock, 0)
            if mask == have:
                continue
            if not have:
                self._selector.register(sock, mask)
            elif not mask:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, mask)
            self._interest[sock] = mask

    def _service(self, link: _Link, sock: socket.socket, events: int) -> None:
        if self._blackhole:
            return  # an event selected before the blackhole went on, in the same batch
        try:
            for pipe in link.pipes:
                if pipe.src is sock and events & selectors.EVENT_READ:
                    data = sock.recv(CHUNK_BYTES)
                    pipe.buf += data
                    pipe.eof = not data
                if pipe.dst is sock and events & selectors.EVENT_WRITE:
                    del pipe.buf[: sock.send(pipe.buf)]
                if pipe.eof and not pipe.buf and not pipe.done and pipe.dst is not None:
                    pipe.dst.shutdown(socket.SHUT_WR)
                    pipe.done = True
        except (BlockingIOError, InterruptedError):
            pass  # spurious wakeup; the selector will call again
        except OSError:
            self._drop(link, rst=True)  # one end reset: pass the reset on to the other
            return
        if all(pipe.done for pipe in link.pipes):
            self._drop(link, rst=False)
        else:
            self._watch(link)

    def _unique_links(self) -> list[_Link]:
        with self._lock:
            return list({id(link): link for link in self._links.values()}.values())

    def _reset_all(self) -> None:
        for link in self._unique_links():
            self._drop(link, rst=True)

    def _set_blackhole(self, on: bool) -> None:
        self._blackhole = on
        for link in self._unique_links():
            if not on and link.upstream is None:
                self._drop(link, rst=True)
            else:
                self._watch(link)

    def _stop_in_loop(self) -> None:
        self._running = False
        self._reset_all()
