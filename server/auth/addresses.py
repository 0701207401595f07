"""The client address that failure budgets count against.

A caller's address is its TCP peer, unless that peer is a configured trusted proxy (TYPECASE_TRUSTED_PROXIES):
then it is the right-most X-Forwarded-For entry that is not itself a trusted proxy. Each proxy appends the address
it saw, so only the entries our own proxies added can be believed; everything left of them is what the client
claimed. With no trusted proxies (the default) X-Forwarded-For means nothing: uvicorn's default of believing it
from loopback let one client pick a fresh address per guess, or charge its failures to someone else's.

HTTP requests arrive resolved already: uvicorn applies this rule with the same list (`forwarded_allow_ips`), so the
gateway's peer is the client. Direct gRPC calls (through Envoy, say) are resolved here from `x-forwarded-for`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import unquote

UNKNOWN = "unknown"


def peer_host(peer: str | None) -> str:
    """The host of a gRPC peer: "ipv4:10.0.0.1:5000" -> "10.0.0.1", "ipv6:[::1]:5000" -> "::1"."""
    if not peer:
        return UNKNOWN
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0] if rest.startswith("[") else rest
        return host.strip("[]")
    return peer


class TrustedProxies:
    def __init__(self, entries: Iterable[str] = ()):
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, metadata: Iterable[tuple[str, str | bytes]] | None = ()) -> str:
        """The caller's address for a call from `peer` carrying `metadata`."""
        host = peer_host(peer)
        if not self.networks or not self.trusts(host):
            return host
        hops = [
            hop.strip()
            for key, value in metadata or ()
            if key == "x-forwarded-for" and isinstance(value, str)
            for hop in value.split(",")
        ]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else host  # every hop is one of ours: the first is the closest we know


def context_client(context, proxies: TrustedProxies) -> str:
    """The caller's address for a servicer context (a gRPC one or the gateway's in-process one)."""
    try:
        return proxies.client(context.peer(), context.invocation_metadata())
    except Exception:  # a context without a peer
        return UNKNOWN
