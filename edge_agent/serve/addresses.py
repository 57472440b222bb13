"""Which addresses ``POST /url`` may fetch from: public ones, and those an allow-list names.

Without this, a client could make the device fetch from its own loopback services, the local
network behind it, or a cloud's metadata service (169.254.169.254) and read the answer back
(server-side request forgery; OWASP's SSRF prevention cheat sheet lists these ranges). The
check is made on the resolved address, so no spelling of a host (``0x7f.1``, ``2130706433``,
a DNS name pointing at 10.0.0.5) gets around it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: NAT64's well-known prefix (RFC 6052): the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not fetched from without an allow-list ("a loopback address", ...), or
    None for a public address. IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4,
    Teredo, NAT64) are judged by that IPv4 address as well."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and (why := refusal(inner)):
                return f"{why} inside an IPv6 address"
    checks = [
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata services live here)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "a site-local address"),
        (not ip.is_global, "a non-public address"),  # e.g. 100.64.0.0/10, carrier-grade NAT
    ]
    return next((why for hit, why in checks if hit), None)


@dataclass(frozen=True)
class UrlAllowList:
    """Networks and host names ``POST /url`` may fetch from although they are not public."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> UrlAllowList:
        """``"10.0.0.0/8,camera.local,::1"``: CIDRs, addresses and host names, comma-separated.
        Raises ValueError naming the entry that is neither."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in filter(None, (e.strip() for e in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = normal_host(entry)
            if not name or "/" in name or ":" in name or not all(p for p in name.split(".")):
                raise ValueError(
                    f"expected a CIDR (10.0.0.0/8), an address or a host name, but got {entry!r}"
                )
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def __or__(self, other: UrlAllowList) -> UrlAllowList:
        return UrlAllowList(self.networks + other.networks, self.hosts | other.hosts)

    def allows(self, host: str, ip: IPAddress) -> bool:
        if normal_host(host) in self.hosts:
            return True
        plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(a in net for a in (ip, plain) if a is not None for net in self.networks)

    def __str__(self) -> str:
        return ",".join([*map(str, self.networks), *sorted(self.hosts)]) or "(empty)"


def normal_host(host: str) -> str:
    """Lower case, without a trailing dot: ``Camera.Local.`` and ``camera.local`` are one."""
    return host.strip().lower().rstrip(".")


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo gives it; an IPv6 zone (``fe80::1%eth0``) is dropped."""
    return ipaddress.ip_address(text.partition("%")[0])
