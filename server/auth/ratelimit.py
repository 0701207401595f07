"""Request rate limits per API key and per user, and failure budgets for logins and credentials, shared by every
replica through Redis (memory when embedded).

A moving window (the `limits` library) so that N per minute holds for any 60 s span, not just per clock minute.

Failure budgets slow an attacker, never an account: no budget is kept per username or per key alone, so failures
from elsewhere never refuse a valid credential (see auth/guard.py for API keys and tokens, AuthService.Login for
passwords). Identifiers put the client address first: addresses contain no "/", so keys cannot collide.
"""

from __future__ import annotations

import math
import time
from typing import Any

import grpc
import limits

from typecase.server.infra.rate_windows import NOT_READ, hit_and_read, moving_window_limiter
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.principal import Principal

MAX_IDENTITY_CHARS = 128  # a login's username is unchecked input: bound the key it makes


def _parse(value: str):
    return limits.parse(value) if value else None


class RateLimits:
    def __init__(
        self,
        storage,
        per_key: str,
        per_user: str,
        login_failures: str,
        credential_failures: str = "",
        login_failures_per_address: str = "",
        credential_failures_per_key_prefix: str = "",
    ):
        self.storage = storage  # a `limits` async storage: Resources.limits_storage (Redis, or memory)
        self.limiter = moving_window_limiter(self.storage)
        self.per_key = _parse(per_key)
        self.per_user = _parse(per_user)
        self.login_failures = _parse(login_failures)  # per (client address, username)
        self.login_failures_per_address = _parse(login_failures_per_address)
        self.credential_failures = _parse(credential_failures)  # per client address
        self.credential_failures_per_key_prefix = _parse(credential_failures_per_key_prefix)

    # -- failure budgets ---------------------------------------------------------------------------------------
    def _login_budgets(self, username: str, client: str):
        if self.login_failures is not None:
            yield self.login_failures, "login", (client, username[:MAX_IDENTITY_CHARS])
        if self.login_failures_per_address is not None:
            yield self.login_failures_per_address, "login-address", (client,)

    async def login_retry_after(self, username: str, client: str) -> float | None:
        """Seconds before `client` may try a password for `username` again; None when it may now. Checked before
        the password, so a refused guess teaches nothing."""
        for limit, scope, identity in self._login_budgets(username, client):
            if not await self.limiter.test(limit, scope, *identity):
                return await self._retry_after(limit, scope, identity)
        return None

    async def count_login_failure(self, username: str, client: str) -> None:
        for limit, scope, identity in self._login_budgets(username, client):
            await self.limiter.hit(limit, scope, *identity)

    async def clear_login_failures(self, username: str, client: str) -> None:
        """After a successful login: this user's own typos from here no longer count."""
        if self.login_failures is not None:
            await self.limiter.clear(self.login_failures, "login", client, username[:MAX_IDENTITY_CHARS])

    async def count_credential_failure(self, client: str, key_prefix: str | None) -> float | None:
        """Count a failed API key or token check; the seconds to wait when the client address or the key prefix is
        over its budget, else None."""
        budgets = []
        if self.credential_failures is not None:
            budgets.append((self.credential_failures, "credential", (client,)))
        if key_prefix and self.credential_failures_per_key_prefix is not None:
            budgets.append((self.credential_failures_per_key_prefix, "credential-prefix", (key_prefix,)))
        wait = None
        for limit, scope, identity in budgets:
            if not await self.limiter.hit(limit, scope, *identity):
                wait = max(wait or 0.0, await self._retry_after(limit, scope, identity))
        return wait

    async def _retry_after(self, limit, scope: str, identity: tuple[str, ...]) -> float:
        stats = await self.limiter.get_window_stats(limit, scope, *identity)
        return max(1.0, stats.reset_time - time.time())

    # -- request rates -----------------------------------------------------------------------------------------
    async def check(self, principal: Principal, read: str | None = None) -> Any:
        """Per key, then per user: a refused window stops there (the per-key hit taken before it stays). Returns
        the value of the Redis key `read` when it could be read in the windows' round trip, else NOT_READ."""
        checks = []
        if self.per_key is not None and principal.api_key_id:
            checks.append((self.per_key, "api_key", principal.api_key_id))
        if self.per_user is not None:
            checks.append((self.per_user, "user", principal.user_id))
        if not checks:
            return NOT_READ
        hits: list[tuple[Any, tuple[str, ...]]] = [(limit, (scope, identity)) for limit, scope, identity in checks]
        refused, value = await hit_and_read(self.limiter, hits, read)
        if refused >= 0:
            await self._refuse(*checks[refused])
        return value

    async def check_key_rate(self, rate: str, api_key_id: str) -> None:
        """A restricted key's own rate ("60/minute", validated when the key was made)."""
        await self._enforce(limits.parse(rate), "restricted_api_key", api_key_id)

    async def _enforce(self, limit, scope: str, identity: str) -> None:
        if not await self.limiter.hit(limit, scope, identity):
            await self._refuse(limit, scope, identity)

    async def _refuse(self, limit, scope: str, identity: str) -> None:
        stats = await self.limiter.get_window_stats(limit, scope, identity)
        retry_after = max(0.0, stats.reset_time - time.time())
        raise TypecaseError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            f"rate limit of {limit} per {scope.replace('_', ' ')} exceeded; retry in {math.ceil(retry_after)}s",
            {"limit": str(limit), "scope": scope},
            retry_after=retry_after,
        )
