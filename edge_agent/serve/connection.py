"""Reading a client's socket under a deadline, so a slow client cannot hold a thread forever.

A socket timeout alone bounds each read: a client sending one byte every few seconds (slowloris)
never trips it and keeps its thread for as long as it likes. Here every read also gets at most
what is left of the request's deadline, which starts with the request's first byte.
"""

from __future__ import annotations

import io
import json
import socket
import time
from typing import Any

from edge_agent.serve.errors import error_body

#: How long the busy answer to one connection too many may take to write, s.
BUSY_REPLY_TIMEOUT_S = 1.0


class DeadlineReader(io.RawIOBase):
    """The receiving side of ``sock``: each read waits at most ``socket_timeout_s``, and all
    reads of one request (from its first byte until ``end_request()``) end by its deadline."""

    def __init__(self, sock: socket.socket, socket_timeout_s: float, request_timeout_s: float):
        super().__init__()
        self._sock = sock
        self.socket_timeout_s, self.request_timeout_s = socket_timeout_s, request_timeout_s
        self._deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        timeout = self.socket_timeout_s
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the request took longer than {self.request_timeout_s:g} s")
            timeout = min(timeout, left)
        self._sock.settimeout(timeout)
        try:
            n = self._sock.recv_into(buffer)
        except TimeoutError:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise TimeoutError(
                    f"the request took longer than {self.request_timeout_s:g} s"
                ) from None
            raise
        if n and self._deadline is None:
            self._deadline = time.monotonic() + self.request_timeout_s
        return n

    def end_request(self) -> None:
        """The request is read: the next one gets its own deadline, and writing the answer
        gets the whole socket timeout again."""
        self._deadline = None
        self._sock.settimeout(self.socket_timeout_s)


def refuse_busy(sock: socket.socket, limit: int) -> None:
    """A 503 written straight on the socket, before any request is read (there is no handler)."""
    body = json.dumps(
        error_body("ServiceUnavailable", f"busy: {limit} connections are open; retry later")
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.settimeout(BUSY_REPLY_TIMEOUT_S)
        sock.sendall(head.encode() + body)
    except OSError:
        pass  # the client went away: nothing to tell it
