"""Who may use the LLM API proxy: access keys, which are Typecase API keys with the "proxy" scope.

The listener spends the server's upstream key (proxy_upstream_api_key) for whoever reaches its port, and off
loopback anyone on the network reaches it. So with proxy_access_keys "auto" (the default) a request needs an access
key whenever an upstream key is set or the listener is not on loopback; "required" asks for one always; "off"
never, and is refused in exactly the cases "auto" would ask for a key unless the loudly named
proxy_insecure_allow_unauthenticated says otherwise (`open_access_problem`, checked at start and on every update).

How a client sends its access key:
- `x-typecase-proxy-key: <key>` always works, and is the only way while the client's own upstream credential
  passes through (no upstream key set and proxy_forward_client_credentials on), because then x-api-key and
  authorization belong to the upstream: `Anthropic(api_key="sk-ant-...", default_headers={"x-typecase-proxy-key":
  "tc_..."})`;
- otherwise (the proxy sends its own upstream key, or no credential) the SDK's credential header carries it:
  `x-api-key: <key>` as the anthropic SDK sends it, or `authorization: Bearer <key>` as the openai SDK does, so
  `Anthropic(base_url=proxy, api_key="tc_...")` just works.
headers.py makes sure neither that header nor any Typecase credential ever reaches the upstream.

Keys are checked by the KeyVerifier app.py hands in (the auth domain's, seen only through this Protocol).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

import grpc

from typecase.server.proxy.headers import ACCESS_KEY_HEADER
from typecase.server.rpc.errors import TypecaseError

LOOPBACK_NAMES = frozenset({"localhost"})
_HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


class KeyVerifier(Protocol):
    async def verify(self, credential: str, client: str) -> str:
        """The user id behind a valid API key with the "proxy" scope; raises TypecaseError otherwise
        (UNAUTHENTICATED, PERMISSION_DENIED for a key without the scope, RESOURCE_EXHAUSTED after too many
        failures from `client`, UNAVAILABLE when keys cannot be checked)."""
        ...

    def is_own_credential(self, value: str) -> bool:
        """True for Typecase's own credentials (API keys, access tokens), which must never go upstream."""
        ...


@dataclass(frozen=True, slots=True)
class Denial:
    status: int
    reason: str
    message: str
    retry_after: float | None = None


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def access_required(mode: str, has_upstream_key: bool, host: str) -> bool:
    if mode == "required":
        return True
    if mode == "off":
        return False
    return has_upstream_key or not is_loopback(host)


def open_access_problem(mode: str, has_upstream_key: bool, host: str, insecure_allowed: bool) -> str | None:
    """Why running with these values would open the proxy to anyone (None when it would not, or is allowed)."""
    if mode != "off" or insecure_allowed:
        return None
    if not is_loopback(host):
        return (
            f"the proxy listens on {host}, beyond loopback, so it needs access keys (proxy_access_keys auto or "
            "required); TYPECASE_PROXY_INSECURE_ALLOW_UNAUTHENTICATED=true runs it open to the network"
        )
    if has_upstream_key:
        return (
            "with proxy_upstream_api_key set the proxy needs access keys (proxy_access_keys auto or required), "
            "or anyone on this machine spends the key; "
            "TYPECASE_PROXY_INSECURE_ALLOW_UNAUTHENTICATED=true allows it"
        )
    return None


def presented_key(headers: list[tuple[bytes, bytes]], credentials_pass_upstream: bool) -> str | None:
    """The access key a request carries (see the module docstring for where), or None."""
    for name, value in headers:
        if name == ACCESS_KEY_HEADER:
            return value.decode("latin-1").strip()
    if credentials_pass_upstream:
        return None
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


def client_address(client: tuple[str, int] | list | None) -> str:
    """The caller's address as the auth interceptor counts failures ("ipv4:127.0.0.1", "ipv6:[::1]")."""
    if not client:
        return "unknown"
    host = client[0]
    return f"ipv6:[{host}]" if ":" in host else f"ipv4:{host}"


async def check(
    verifier: KeyVerifier | None, headers: list[tuple[bytes, bytes]], credentials_pass_upstream: bool, client
) -> Denial | None:
    """None when the request may pass; otherwise why not, as the HTTP answer to give."""
    key = presented_key(headers, credentials_pass_upstream)
    if not key:
        where = (
            "x-typecase-proxy-key (x-api-key and authorization go to the upstream)"
            if credentials_pass_upstream
            else "x-api-key, authorization: Bearer, or x-typecase-proxy-key"
        )
        return Denial(
            401, "UNAUTHENTICATED", f"this proxy needs an access key (an API key with the proxy scope) in {where}"
        )
    if verifier is None:
        return Denial(503, "UNAVAILABLE", "proxy access keys cannot be checked on this server")
    try:
        await verifier.verify(key, client_address(client))
    except TypecaseError as error:
        return Denial(_HTTP_STATUS.get(error.code, 503), error.reason, error.message, error.retry_after)
    return None
