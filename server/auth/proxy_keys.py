"""The LLM API proxy's access-key check, as the auth domain provides it (the proxy sees it as access.KeyVerifier,
handed over by app.py).

A valid key passes on the authenticator's cache alone, with no rate-limiter round trip on the proxy's hot path;
only a failure is charged to the client address's and the key prefix's failed-credential budgets, the same
budgets the API's auth interceptor keeps (auth/guard.py).
"""

from __future__ import annotations

import hmac
import math

import grpc
import jwt

from typecase.server.auth.credentials import API_KEY_PREFIX
from typecase.server.auth.guard import shown_prefix
from typecase.server.auth.scopes import SCOPE_PROXY
from typecase.server.auth.tokens import ISSUER, looks_like_jwt
from typecase.server.rpc.errors import TypecaseError


class ProxyKeys:
    def __init__(self, auth, admin_api_key: str | None = None):
        """`auth`: the AuthService (its authenticator exists once it has started); `admin_api_key`: the bootstrap
        key from the settings, which is Typecase's own whatever it looks like."""
        self.auth = auth
        self._admin_key = admin_api_key.encode() if admin_api_key else None

    async def verify(self, credential: str, client: str) -> str:
        try:
            return (await self.auth.authenticator.authenticate(credential, SCOPE_PROXY)).user_id
        except TypecaseError as error:
            if error.code != grpc.StatusCode.UNAUTHENTICATED:
                raise
            wait = await self.auth.rate_limits.count_credential_failure(client, shown_prefix(credential))
            if wait is not None:  # over budget: slowed like the API's auth interceptor (auth/guard.py)
                raise TypecaseError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "RATE_LIMITED",
                    f"too many failed authentication attempts; retry in {math.ceil(wait)}s",
                    {"limit": "authentication failures"},
                    retry_after=wait,
                ) from None
            raise

    def is_own_credential(self, value: str) -> bool:
        if value.startswith(API_KEY_PREFIX):
            return True
        if self._admin_key is not None and hmac.compare_digest(value.encode(), self._admin_key):
            return True
        if looks_like_jwt(value):
            try:
                claims = jwt.decode(value, options={"verify_signature": False})
            except jwt.InvalidTokenError:
                return False
            return isinstance(claims, dict) and claims.get("iss") == ISSUER
        return False
