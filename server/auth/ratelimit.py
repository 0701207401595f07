"""Request rate limits per API key and per user, shared by every replica through Redis (memory when embedded).

A moving window (the `limits` library) so that N per minute holds for any 60 s span, not just per clock minute.
"""

from __future__ import annotations

import math
import time

import grpc
import limits
from limits.aio.strategies import MovingWindowRateLimiter

from typecase.server.infra.cache import REDIS_MAX_CONNECTIONS, limits_storage
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.principal import Principal


class RateLimits:
    def __init__(
        self,
        redis_url: str | None,
        per_key: str,
        per_user: str,
        login_failures: str,
        key_prefix: str = "typecase:ratelimit",
        credential_failures: str = "",
        max_connections: int = REDIS_MAX_CONNECTIONS,
    ):
        self.storage = limits_storage(redis_url, key_prefix, max_connections)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.per_key = limits.parse(per_key) if per_key else None
        self.per_user = limits.parse(per_user) if per_user else None
        self.login_failures = limits.parse(login_failures) if login_failures else None
        self.credential_failures = limits.parse(credential_failures) if credential_failures else None

    async def login_allowed(self, username: str) -> bool:
        """False while a username has used up its failed-login budget (checked before verifying a password)."""
        if self.login_failures is None:
            return True
        return await self.limiter.test(self.login_failures, "login", username)

    async def count_login_failure(self, username: str) -> None:
        if self.login_failures is not None:
            await self.limiter.hit(self.login_failures, "login", username)

    # Failed credential checks (wrong, unknown or malformed API keys and tokens) per client address.
    async def credential_check_allowed(self, client: str) -> bool:
        if self.credential_failures is None:
            return True
        return await self.limiter.test(self.credential_failures, "credential", client)

    async def count_credential_failure(self, client: str) -> None:
        if self.credential_failures is not None:
            await self.limiter.hit(self.credential_failures, "credential", client)

    async def check(self, principal: Principal) -> None:
        checks = []
        if self.per_key is not None and principal.api_key_id:
            checks.append((self.per_key, "api_key", principal.api_key_id))
        if self.per_user is not None:
            checks.append((self.per_user, "user", principal.user_id))
        for limit, scope, identity in checks:
            await self._enforce(limit, scope, identity)

    async def _enforce(self, limit, scope: str, identity: str) -> None:
        if not await self.limiter.hit(limit, scope, identity):
            stats = await self.limiter.get_window_stats(limit, scope, identity)
            retry_after = max(0.0, stats.reset_time - time.time())
            raise TypecaseError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                f"rate limit of {limit} per {scope.replace('_', ' ')} exceeded; retry in {math.ceil(retry_after)}s",
                {"limit": str(limit), "scope": scope},
                retry_after=retry_after,
            )
