"""Authentication on every RPC: resolves the bearer credential to a Principal, applies the rate limits and binds
the caller for the domain services. The gateway turns HTTP headers, `access_token` and WebSocket subprotocols into
the same `authorization` metadata, so REST and WebSocket calls pass through exactly this check."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import grpc

from typecase.server.auth.authenticator import Authenticator, unauthenticated
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.interceptors import WrappingInterceptor
from typecase.server.rpc.principal import Principal

log = logging.getLogger("typecase.auth")

PUBLIC_METHODS = frozenset({"/typecase.v1.AuthService/Login", "/typecase.v1.AuthService/RefreshToken"})
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def client_address(context) -> str:
    """The caller's address without its port ("ipv4:127.0.0.1:5000" -> "ipv4:127.0.0.1")."""
    try:
        peer = context.peer() or "unknown"
    except Exception:  # a context without a peer
        return "unknown"
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


def bearer_credential(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, credential = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                return credential.strip()
            raise unauthenticated("authorization must be 'Bearer <API key or access token>'")
    raise unauthenticated("authentication required: send 'authorization: Bearer <API key or access token>'")


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, authenticator: Authenticator, rate_limits: RateLimits, fixed_principal: Principal | None = None):
        """`fixed_principal` replaces authentication entirely (TYPECASE_AUTH_DISABLED, loopback only)."""
        self.authenticator = authenticator
        self.rate_limits = rate_limits
        self.fixed_principal = fixed_principal

    async def _authenticate(self, details, context) -> Principal:
        """Failed attempts are counted per client address (a client over the budget is refused before any check)
        and logged without the credential."""
        client = client_address(context)
        if not await self.rate_limits.credential_check_allowed(client):
            log.warning("authentication refused for %s from %s: too many failed attempts", details.method, client)
            raise TypecaseError(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED",
                                "too many failed authentication attempts from this address; wait a minute",
                                retry_after=60)
        try:
            return await self.authenticator.authenticate(bearer_credential(details.invocation_metadata))
        except TypecaseError as error:
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                await self.rate_limits.count_credential_failure(client)
                log.warning("authentication failed for %s from %s: %s", details.method, client, error.message)
            raise

    @asynccontextmanager
    async def around(self, details, context, rpc_type):
        method = details.method
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES):
            principal = None
        elif self.fixed_principal is not None:
            principal = self.fixed_principal
        else:
            principal = await self._authenticate(details, context)
            await self.rate_limits.check(principal)
        token = caller.bind(principal)
        try:
            yield None
        finally:
            try:
                caller.bind_reset(token)
            except ValueError:  # a stream finalised from another context
                pass
