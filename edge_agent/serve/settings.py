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
#: Connections served at once; one more is answered 503 at once and closed. Each holds a thread
#: and up to max_body_bytes of body (16 x 20 MiB = 320 MiB at most on a 1-2 GB device).
DEFAULT_MAX_CONNECTIONS = 16
#: Images decoded and run through the model at once (each up to max_pixels x 3 bytes: 120 MB at
#: 40 MP); more wait for a turn, then get 503. The model runs one image at a time anyway.
DEFAULT_MAX_DECODES = 2


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
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_decodes: int = DEFAULT_MAX_DECODES

    def __post_init__(self) -> None:
        positive = ("max_body_bytes", "max_pixels", "url_fetch_timeout_s")
        counts = ("max_connections", "max_decodes")
        for name in (*positive, *counts, "request_timeout_s", "socket_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, but got {getattr(self, name)}")
