"""Authentication on every RPC: resolves the bearer credential to a Principal (auth/guard.py: failure budgets and
rate limits) and binds the caller for the domain services. The gateway turns HTTP headers, `access_token` and
WebSocket subprotocols into the same `authorization` metadata, so REST and WebSocket calls pass through exactly
this check."""

from __future__ import annotations

from contextlib import asynccontextmanager

from typecase.server.auth.addresses import TrustedProxies, context_client
from typecase.server.auth.guard import CredentialGuard, bearer_credential
from typecase.server.rpc import principal as caller
from typecase.server.rpc.interceptors import WrappingInterceptor
from typecase.server.rpc.principal import Principal

__all__ = ["AuthInterceptor", "bearer_credential"]  # bearer_credential moved to guard.py; importable here still

PUBLIC_METHODS = frozenset(
    {"/typecase.v1.AuthService/Login", "/typecase.v1.AuthService/RefreshToken", "/typecase.v1.AuthService/Register"}
)
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, guard: CredentialGuard, proxies: TrustedProxies, fixed_principal: Principal | None = None):
        """`fixed_principal` replaces authentication entirely (TYPECASE_AUTH_DISABLED, loopback only)."""
        self.guard = guard
        self.proxies = proxies
        self.fixed_principal = fixed_principal

    @asynccontextmanager
    async def around(self, details, context, rpc_type):
        method = details.method
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES):
            principal = None
        elif self.fixed_principal is not None:
            principal = self.fixed_principal
        else:
            principal = await self.guard.principal(
                details.invocation_metadata, context_client(context, self.proxies), method
            )
        token = caller.bind(principal)
        try:
            yield None
        finally:
            try:
                caller.bind_reset(token)
            except ValueError:  # a stream finalised from another context
                pass
