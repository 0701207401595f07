"""The check every authenticated call passes: bearer credential -> Principal, failure budgets, request rates.
Used by the auth interceptor (gRPC, REST, WebSocket) and by the HTTP-native surfaces (the OpenAI-compatible API).

Why a valid credential is always checked and always passes, even from an address or key prefix over its failure
budget: API keys and access tokens carry 190 bits or more, so no rate of guessing finds one and refusing before
the check buys no security; but it would let one client lock out everyone sharing its address (a NAT, a proxy not
listed in TYPECASE_TRUSTED_PROXIES) or a key's owner through its shown prefix. So failures are counted per client
address and per key prefix, and once either is over budget a failure is answered RESOURCE_EXHAUSTED with a retry
delay instead of UNAUTHENTICATED: clients back off, and the log names who is guessing. Passwords, which can be
guessed, are budgeted before the check instead (AuthService.Login).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import grpc

from typecase.server.auth import scopes
from typecase.server.auth.authenticator import Authenticator, unauthenticated
from typecase.server.auth.credentials import API_KEY_PREFIX, SHOWN_PREFIX_LENGTH
from typecase.server.auth.membership import Access, Memberships
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.principal import Principal

log = logging.getLogger("typecase.auth")
MERGED_MAX_ENTRIES = (
    4096  # callers' principals kept merged with their access (about one per active key); emptied when full
)


def bearer_credential(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, credential = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                return credential.strip()
            raise unauthenticated("authorization must be 'Bearer <API key or access token>'")
    raise unauthenticated("authentication required: send 'authorization: Bearer <API key or access token>'")


def shown_prefix(credential: str) -> str | None:
    """The part of an API key that lists show (and that an attacker targeting one key would keep fixed)."""
    if credential.startswith(API_KEY_PREFIX) and len(credential) > SHOWN_PREFIX_LENGTH:
        return credential[:SHOWN_PREFIX_LENGTH]
    return None


class CredentialGuard:
    def __init__(self, authenticator: Authenticator, rate_limits: RateLimits, memberships: Memberships | None = None):
        self.authenticator = authenticator
        self.rate_limits = rate_limits
        self.memberships = memberships
        self._merged: dict[tuple[int, int], tuple[Principal, Access, Principal]] = {}

    async def principal(self, metadata, client: str, method: str = "") -> Principal:
        """The caller behind the call's `authorization` metadata, from `client`; raises UNAUTHENTICATED,
        RESOURCE_EXHAUSTED (failure budget or request rate) or USER_DISABLED."""
        credential = ""
        try:
            credential = bearer_credential(metadata)
            principal = await self.authenticator.authenticate(credential)
        except TypecaseError as error:
            if error.code != grpc.StatusCode.UNAUTHENTICATED:
                raise
            prefix = shown_prefix(credential)
            wait = await self.rate_limits.count_credential_failure(client, prefix)
            # Logged without the credential; the shown prefix is what the key's owner sees in their list.
            log.warning(
                "authentication failed for %s from %s%s: %s",
                method or "a call",
                client,
                f" (key {prefix}…)" if prefix else "",
                error.message,
            )
            if wait is not None:
                raise TypecaseError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "RATE_LIMITED",
                    f"too many failed authentication attempts; retry in {math.ceil(wait)}s",
                    {"limit": "authentication failures"},
                    retry_after=wait,
                ) from None
            raise
        if principal.restriction is not None:
            if method not in scopes.allowed_methods(principal.restriction.actions):
                raise TypecaseError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "API_KEY_RESTRICTED",
                    "this API key is restricted to "
                    f"{', '.join(sorted(principal.restriction.actions))} on named resources; it cannot call "
                    f"{method.rsplit('/', 1)[-1] or 'this surface'}",
                    {"action": method},
                )
            if principal.restriction.rate_limit:
                await self.rate_limits.check_key_rate(principal.restriction.rate_limit, principal.api_key_id or "")
        if self.memberships is None:
            await self.rate_limits.check(principal)
            return principal
        # The caller's cached access comes back with the rate windows' round trip when both are on Redis.
        cached = await self.rate_limits.check(principal, read=self.memberships.redis_key(principal.user_id))
        return self._with_access(principal, await self.memberships.access_of(principal.user_id, cached))

    def _with_access(self, principal: Principal, access: Access) -> Principal:
        """`principal` with its groups, role and permissions; made once per pair of cached values (the
        authenticator and the memberships hand out the same objects while their caches hold them), since
        dataclasses.replace costs ~5-30 us on every call."""
        key = (id(principal), id(access))
        hit = self._merged.get(key)
        if hit is not None and hit[0] is principal and hit[1] is access:  # ids are reused once objects are freed
            return hit[2]
        merged = replace(
            principal,
            group_ids=access.group_ids,
            role=access.role or principal.role,
            permissions=access.permissions if access.role else principal.permissions,
        )
        if len(self._merged) >= MERGED_MAX_ENTRIES:
            self._merged.clear()
        self._merged[key] = (principal, access, merged)
        return merged
