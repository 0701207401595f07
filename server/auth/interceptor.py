"""Authentication on every RPC: resolves the bearer credential to a Principal (auth/guard.py: failure budgets and
rate limits) and binds the caller for the domain services. The gateway turns HTTP headers, `access_token` and
WebSocket subprotocols into the same `authorization` metadata, so REST and WebSocket calls pass through exactly
this check."""

from __future__ import annotations

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

    def around(self, details, context, rpc_type):
        return _Authenticated(self, details, context)


class _Authenticated:
    """One call's caller, bound for its duration; a plain async context manager (an @asynccontextmanager generator
    costs a few microseconds more on every call)."""

    __slots__ = ("interceptor", "details", "context", "token")

    def __init__(self, interceptor: AuthInterceptor, details, context):
        self.interceptor = interceptor
        self.details = details
        self.context = context

    async def __aenter__(self) -> None:
        interceptor = self.interceptor
        method = self.details.method
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES):
            principal = None
        elif interceptor.fixed_principal is not None:
            principal = interceptor.fixed_principal
        else:
            principal = await interceptor.guard.principal(
                self.details.invocation_metadata, context_client(self.context, interceptor.proxies), method
            )
        self.token = caller.bind(principal)

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            caller.bind_reset(self.token)
        except ValueError:  # a stream finalised from another context
            pass
        return False
