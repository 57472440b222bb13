"""What ``edge-agent serve`` is configured with: answer fields, limits and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.serve.addresses import UrlAllowList
from edge_agent.serve.fetch import DEFAULT_URL_FETCH_TIMEOUT_S
from edge_agent.serve.images import DEFAULT_MAX_PIXELS
from edge_agent.serve.request import DEFAULT_MAX_BODY_BYTES

#: How long one socket read or write may wait, and an idle keep-alive connection is kept, s.
DEFAULT_SOCKET_TIMEOUT_S = 30.0
#: Headers and body of one request must arrive within this, counted from its first byte, s.
#: A client trickling a byte a second (slowloris) holds a thread this long, not forever;
#: a 20 MiB body needs 5.6 Mbit/s to make it.
DEFAULT_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServeSettings:
    project: str = ""
    iteration: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    url_fetch_timeout_s: float = DEFAULT_URL_FETCH_TIMEOUT_S
    #: POST /url makes the device fetch what a client names: off unless asked for.
    allow_url: bool = False
    #: Non-public networks and hosts /url may fetch from anyway.
    url_allow: UrlAllowList = field(default_factory=UrlAllowList)
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S

    def __post_init__(self) -> None:
        positive = ("max_body_bytes", "max_pixels", "url_fetch_timeout_s")
        for name in (*positive, "request_timeout_s", "socket_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, but got {getattr(self, name)}")
