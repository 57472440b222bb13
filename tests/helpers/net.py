"""Who listens where (Linux /proc) and whether the demo's embedded broker can run here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edge_agent.demo.broker import INSTALL_HINT

TCP_LISTEN = "0A"  # st column of /proc/net/tcp


def require_amqtt() -> None:
    if importlib.util.find_spec("amqtt") is None:
        pytest.fail(
            f"amqtt is not installed; the embedded broker tests need it: {INSTALL_HINT}",
            pytrace=False,
        )


def listeners(port: int) -> list[str]:
    """Addresses listening on TCP ``port`` (Linux /proc), as hex IP strings: 0100007F is
    127.0.0.1, 00000000 is every IPv4 address, the long forms are IPv6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, local_port = fields[1].rsplit(":", 1)
            if int(local_port, 16) == port and fields[3] == TCP_LISTEN:
                found.append(address)
    return found
