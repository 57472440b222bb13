"""``POST /url``: download an image over http(s) without letting the client reach what the
device can reach (its loopback, its network, the cloud metadata service).

Every hop is checked the same way: the scheme is http or https, the host is resolved once, each
address is checked (edge_agent/serve/addresses.py), and the connection goes to an address that
passed, with the Host header and TLS server name of the URL. A second lookup at connect time
could answer differently (DNS rebinding), so there is none. Redirects are followed by this
loop, not by a library, so each hop is checked. No proxy is used: a proxy would resolve and
connect on our behalf, after the check.

Error messages name URLs and addresses, never bytes of an answer: a client must not be able to
read a remote file, a status line or a banner through them.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

from edge_agent import __version__
from edge_agent.serve.addresses import UrlAllowList, parse_address, refusal
from edge_agent.serve.errors import RequestError
from edge_agent.sources import redact

#: /url: socket timeout for connect and each read, and the deadline for the whole download, s.
DEFAULT_URL_FETCH_TIMEOUT_S = 10.0
#: Redirects followed per download. A camera or storage URL needs one or two; browsers allow 20.
MAX_REDIRECTS = 5
READ_CHUNK_BYTES = 64 * 1024
URL_SCHEMES = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class _Target:
    url: str  # redacted, for messages
    scheme: str
    host: str  # IDNA-encoded, as resolved and as sent in Host and SNI
    port: int
    path: str
    host_header: str


def _target(url: str) -> _Target:
    safe = redact(url)[:300]
    invalid = RequestError(
        HTTPStatus.BAD_REQUEST,
        "BadRequestInvalidUri",
        f"url must be http:// or https:// with a host, but got {safe!r}",
    )
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):  # a bad port, an unencodable host name
        raise invalid from None
    if scheme not in URL_SCHEMES or not host:
        raise invalid
    default = URL_SCHEMES[scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port in (None, default) else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(safe, scheme, host, port or default, path, host_header)


def _addresses(target: _Target, allow: UrlAllowList) -> list[tuple[int, tuple[object, ...]]]:
    """(family, sockaddr) of ``target.host`` that may be fetched from; resolved once."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequestImageUrl",
            f"fetching {target.url}: cannot resolve {target.host!r}: {exc}",
        ) from None
    allowed, refused = [], []
    for family, _, _, _, sockaddr in infos:
        ip = parse_address(str(sockaddr[0]))
        why = refusal(ip)
        if why is None or allow.allows(target.host, ip):
            allowed.append((int(family), tuple(sockaddr)))
        else:
            refused.append(f"{ip} ({why})")
    if not allowed:
        raise RequestError(
            HTTPStatus.FORBIDDEN,
            "Forbidden",
            f"fetching {target.url} is refused: {target.host} resolves to "
            f"{', '.join(dict.fromkeys(refused))}. Name it in --url-allow to allow it",
        )
    return allowed


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection over a socket we opened to an address we checked; ``host`` is
    only the name sent in Host (and, before this, in TLS SNI)."""

    def __init__(self, host: str, port: int, open_socket: Callable[[], socket.socket]) -> None:
        super().__init__(host, port)
        self._open_socket = open_socket

    def connect(self) -> None:
        self.sock = self._open_socket()


class _Download:
    """One fetch of a URL and its redirects, under one deadline and one byte cap.

    Socket timeouts bound each connect and read, but a server that trickles a byte now and then
    never trips them, so a timer shuts the socket down when the deadline passes."""

    def __init__(self, max_bytes: int, timeout_s: float, allow: UrlAllowList) -> None:
        self.max_bytes, self.timeout_s, self.allow = max_bytes, timeout_s, allow
        self.deadline = time.monotonic() + timeout_s
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv
                except OSError:
                    pass

    def run(self, url: str) -> bytes:
        timer = threading.Timer(self.timeout_s, self.expire)
        timer.name, timer.daemon = "serve-url-deadline", True
        timer.start()
        try:
            for hop in range(MAX_REDIRECTS + 1):
                try:
                    target = _target(url)
                except RequestError:
                    if hop == 0:
                        raise
                    where = f"redirect to {redact(url)[:300]!r} refused: not http(s)"
                    raise _failed(target, where) from None
                answer = self._hop(target, _addresses(target, self.allow))
                if isinstance(answer, bytes):
                    return answer
                url = urljoin(url, answer)
        finally:
            timer.cancel()
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequestImageUrl",
            f"fetching {target.url}: more than {MAX_REDIRECTS} redirects",
        )

    def _connect(
        self, target: _Target, addresses: list[tuple[int, tuple[object, ...]]]
    ) -> socket.socket:
        """A socket to the first checked address that answers (TLS for https)."""
        error: OSError = ConnectionError("no address")
        for family, sockaddr in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self._time_left())
                sock.connect(sockaddr)
                if target.scheme == "https":
                    sock = _tls_context().wrap_socket(sock, server_hostname=target.host)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            with self._lock:
                self._sock, expired = sock, self.expired
            if expired:  # the timer fired while we connected, before it could see the socket
                sock.close()
                raise TimeoutError("deadline passed")
            return sock
        raise error

    def _time_left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError("deadline passed")
        return min(left, self.timeout_s)

    def _hop(self, target: _Target, addresses: list[tuple[int, tuple[object, ...]]]) -> bytes | str:
        """The body of a 2xx answer, or the Location of a redirect."""
        conn = _PinnedConnection(target.host, target.port, lambda: self._connect(target, addresses))
        headers = {
            "Host": target.host_header,
            "User-Agent": f"edgesight/{__version__}",
            "Accept": "image/*",
            "Connection": "close",
        }
        try:
            conn.request("GET", target.path, headers=headers)
            resp = conn.getresponse()
            if resp.status in _REDIRECTS and (location := resp.getheader("Location")):
                return location
            if not 200 <= resp.status < 300:
                phrase = HTTPStatus(resp.status).phrase if resp.status in _KNOWN else "?"
                raise _failed(target, f"HTTP {resp.status} {phrase}")  # not the server's text
            return self._body(target, resp)
        except RequestError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise _failed(target, self._reason(exc)) from None
        finally:
            conn.close()
            with self._lock:
                self._sock = None

    def _body(self, target: _Target, resp: http.client.HTTPResponse) -> bytes:
        too_big = RequestError(
            HTTPStatus.BAD_REQUEST,
            "BadRequestImageSizeBytes",
            f"the image at {target.url} is larger than {self.max_bytes} bytes",
        )
        declared = resp.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_big
        chunks, total = [], 0
        while chunk := resp.read1(READ_CHUNK_BYTES):
            total += len(chunk)
            if total > self.max_bytes:
                raise too_big
            chunks.append(chunk)
        if self.expired:  # the timer's shutdown looks like the end of the body
            raise TimeoutError("deadline passed")
        return b"".join(chunks)

    def _reason(self, exc: BaseException) -> str:
        """Our words for a failure: OS and TLS errors are local text; http.client's exceptions
        can hold what the server sent (a status line, a banner), so only their type is named."""
        if self.expired or isinstance(exc, TimeoutError):
            return f"no complete answer within {self.timeout_s:g} s"
        if isinstance(exc, http.client.HTTPException):
            return f"the answer is not valid HTTP ({type(exc).__name__})"
        return str(exc) or type(exc).__name__


_KNOWN = frozenset(s.value for s in HTTPStatus)


def _failed(target: _Target, reason: str) -> RequestError:
    return RequestError(
        HTTPStatus.BAD_REQUEST, "BadRequestImageUrl", f"fetching {target.url}: {reason}"
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's CA store, hostname checks on; made once (loading the CAs takes a while)."""
    return ssl.create_default_context()


def fetch_image(
    url: str,
    max_bytes: int,
    timeout_s: float = DEFAULT_URL_FETCH_TIMEOUT_S,
    allow: UrlAllowList | None = None,
) -> bytes:
    """Download ``url`` (http or https, public addresses or those ``allow`` names), following
    up to MAX_REDIRECTS redirects, with a size cap and one deadline for everything."""
    return _Download(max_bytes, timeout_s, allow or UrlAllowList()).run(url)
