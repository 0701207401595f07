"""Which addresses a URL chosen by a user may reach (the SSRF guard of http nodes, later of tools and OpenAPI
fetches): only public ones, unless an operator allows a host or network.

`ipaddress.is_global` alone is not enough (measured on Python 3.11): it calls 64:ff9b::7f00:1 (NAT64 of
127.0.0.1), ::7f00:1 (IPv4-compatible), 2002:7f00:1:: (6to4 of 127.0.0.1) and fec0::1 (site-local) global, and
a host resolving to one of them reaches the server's loopback or LAN through a translator or tunnel. So IPv6
addresses that carry an IPv4 address are judged by that address, and the ranges whose embedding is not fixed
(NAT64 local-use, Teredo) or that are local by definition (site-local) are never public. No maintained library
does this (the `ipaddress` module, validators and requests' helpers all stop at is_private / is_global).

The policy resolves a host itself and returns the address to connect to, so that a second DNS answer cannot
swap in another address between the check and the connection (DNS rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
# Never public: where an IPv4 address sits depends on the operator's prefix length (RFC 8215 local use), is
# obfuscated behind a relay (Teredo), or the range is local by definition (site-local, deprecated but routed by
# some stacks).
NON_PUBLIC_IPV6 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b:1::/48", "2001::/32", "fec0::/10"))


class Blocked(Exception):
    """The host or address may not be reached."""


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, IPv4-compatible, NAT64 (well-known prefix) or
    6to4; None for other addresses."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_WELL_KNOWN or address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def is_public(address: Address) -> bool:
    """Whether the address is on the public internet (not private, loopback, link-local, shared, reserved,
    multicast, unspecified, nor an IPv6 form of one of those)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        if any(address in network for network in NON_PUBLIC_IPV6):
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast


class AddressPolicy:
    """Public addresses, plus the operator's exceptions: hostnames, `*.suffix` patterns, IPs and CIDRs."""

    def __init__(self, allowed: Iterable[str] = (), setting: str = "the allowed hosts"):
        self.setting = setting  # named in the refusal, so the operator knows what to change
        self.hosts: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[Network] = []
        for entry in allowed:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                self.hosts.add(entry.rstrip("."))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    def address_allowed(self, address: Address) -> bool:
        inner = embedded_ipv4(address)
        for candidate in (address, inner):
            if candidate is not None and any(candidate in network for network in self.networks):
                return True
        return is_public(address)

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for `host`; Blocked when any address it resolves to may not be reached,
        ConnectionError when it does not resolve."""
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ConnectionError(f"cannot resolve {host!r}: {exc.strerror}") from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
            if not addresses:
                raise ConnectionError(f"cannot resolve {host!r}")
        if not self.host_allowed(host):
            for address in addresses:
                if not self.address_allowed(address):
                    raise Blocked(
                        f"{host} resolves to {address}, a non-public address; add it to {self.setting} to allow it"
                    )
        return str(addresses[0])
