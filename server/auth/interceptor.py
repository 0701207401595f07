"""Authentication on every RPC: resolves the bearer credential to a Principal, applies the rate limits and binds
the caller for the domain services. The gateway turns HTTP headers, `access_token` and WebSocket subprotocols into
the same `authorization` metadata, so REST and WebSocket calls pass through exactly this check."""

from __future__ import annotations

from contextlib import asynccontextmanager

from typecase.server.auth.authenticator import Authenticator, unauthenticated
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.rpc import principal as caller
from typecase.server.rpc.interceptors import WrappingInterceptor
from typecase.server.rpc.principal import Principal

PUBLIC_METHODS = frozenset({"/typecase.v1.AuthService/Login", "/typecase.v1.AuthService/RefreshToken"})
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


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

    @asynccontextmanager
    async def around(self, details, context, rpc_type):
        method = details.method
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES):
            principal = None
        elif self.fixed_principal is not None:
            principal = self.fixed_principal
        else:
            principal = await self.authenticator.authenticate(bearer_credential(details.invocation_metadata))
            await self.rate_limits.check(principal)
        token = caller.bind(principal)
        try:
            yield None
        finally:
            try:
                caller.bind_reset(token)
            except ValueError:  # a stream finalised from another context
                pass
