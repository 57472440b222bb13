"""Where a bundle download may connect, and the connection to it.

The URL comes from an MQTT command or a fleet document, so the address may point into the LAN
the device sits on, and an error message may end up in logs and MQTT. This module holds that
guard apart from download.py's byte counting and resuming, so it can be read on its own: a
scheme outside the policy is refused; a host resolving to a private, loopback, link-local or
multicast address is refused before connecting; the connection goes to the address that was
checked, so a second DNS answer cannot swap it (DNS rebinding), while TLS still verifies the
certificate against the URL's host name; a password in a URL is masked before it is shown.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable

#: How often the stop watcher looks whether the download has finished, s.
STOP_POLL_S = 0.2


class Retry(Exception):
    """A fault another attempt may cure (a cut, a stall, a 503); ``reason`` is kept if not."""


class Refused(Exception):
    """The policy or TLS refuses this connection; another attempt would be refused too."""


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: error messages end up in logs and MQTT."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def scheme_refusal(url: str, allow_http: bool) -> str | None:
    """Why ``url``'s scheme may not be fetched (None when it may: https, file, allowed http)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("https", "http", "file") or (scheme == "http" and not allow_http):
        allowed = "https, file" + (", http" if allow_http else " (http is not allowed)")
        return f"scheme {scheme!r} refused; allowed: {allowed}"
    return None


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The first address of ``host``, refused if any is one a device must not reach."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Retry(f"cannot resolve {host!r}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private:
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if not ip.is_global or ip.is_multicast:  # LAN, loopback, link-local, CGNAT...
                raise Refused(
                    f"{host} resolves to {ip}, not a public unicast address (private, "
                    "loopback, link-local or multicast): refused, allow_private is off"
                )
    return addresses[0]


def open_connection(
    url: str,
    *,
    allow_http: bool,
    allow_private: bool,
    cafile: str | None,
    timeout_s: Callable[[], float],
) -> http.client.HTTPConnection:
    """An HTTP(S) connection to ``url``'s host at its checked address. ``timeout_s`` is asked
    once the address is known (it may raise: a passed deadline). Raises Refused or Retry."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not allow_http):
        raise Refused(f"redirect to {mask_url(url)} refused (scheme {scheme!r})")
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    address = resolve(host, port, allow_private)
    timeout = timeout_s()
    conn: http.client.HTTPConnection
    # Connect to the address checked, not to a second DNS answer; http.client uses a
    # socket it is given. TLS verifies the certificate against the URL's host name.
    try:
        sock = socket.create_connection((address, port), timeout)
    except OSError as exc:
        raise Retry(f"cannot connect to {host}:{port}: {exc}") from exc
    if scheme == "https":
        context = ssl.create_default_context(cafile=cafile)
        try:
            sock = context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise Refused(f"TLS certificate of {host} refused: {exc.verify_message}") from exc
        except OSError as exc:
            sock.close()
            raise Retry(f"TLS with {host}:{port} failed: {exc}") from exc
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = sock
    return conn


class LiveSocket:
    """The socket a download reads from now, shared with the stop watcher's thread so a stop
    can shut it and a blocked read returns at once."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def hold(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock

    def watch(self, stop: threading.Event, done: threading.Event) -> None:
        """Shut the live socket when ``stop`` is set, so a blocked read returns at once; the
        download's ``fetch-stop`` thread runs this until ``done``."""
        while not done.is_set():
            if stop.wait(STOP_POLL_S):
                self.shut()
                return

    def shut(self) -> None:
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed: nothing to wake

    def set_timeout(self, timeout_s: float) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.settimeout(timeout_s)
