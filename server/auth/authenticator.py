"""Turns a bearer credential (an API key or an access token) into a Principal.

Lookups are cached for a few seconds (`api_key_cache_seconds`) so an authenticated call costs no SQL round trip;
a revoke on this replica takes effect at once, on other replicas within that window. An access token is checked
against its login session (`sid`), so revoking the session (password change, refresh-token reuse) ends it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import jwt
from cachetools import LRUCache
from sqlalchemy import select, update

from typecase.server.auth import scopes
from typecase.server.auth.credentials import MAX_CREDENTIAL_BYTES, digest
from typecase.server.auth.models import ApiKeyRow, LoginSessionRow, UserRow
from typecase.server.auth.tokens import TokenSigner, looks_like_jwt
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.principal import KeyRestriction, Principal

log = logging.getLogger("typecase.auth")
LAST_USED_RESOLUTION = timedelta(minutes=1)
LAST_USED_SECONDS = LAST_USED_RESOLUTION.total_seconds()


def unauthenticated(message: str, reason: str = "UNAUTHENTICATED") -> TypecaseError:
    return TypecaseError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


@dataclass
class _Cached:
    principal: Principal | None  # None: the credential is known to be invalid
    reason: str
    until: float
    error_reason: str = "UNAUTHENTICATED"
    user_id: str = ""  # whose credential it is, when known
    scopes: frozenset[str] = frozenset()  # an API key's (auth/scopes.py)


class Authenticator:
    def __init__(self, db: Database, signer: TokenSigner, cache_seconds: float, cache_max_entries: int = 100_000):
        """Each cache keeps at most `cache_max_entries` (least recently used go first): wrong keys are cached too,
        and a stream of random ones must not grow memory without end. Entries carry their own expiry (`until`,
        checked on every read), so the caches are plain LRUs: cachetools' TTLCache expired entries on every read
        too, ~15 us of each authenticated call on the 2-core VM against ~2 us for an LRUCache read."""
        self.db = db
        self.signer = signer
        self.cache_seconds = cache_seconds
        self._keys: LRUCache[str, _Cached] = LRUCache(cache_max_entries)
        self._sessions: LRUCache[str, _Cached] = LRUCache(cache_max_entries)
        self._last_used: dict[str, float] = {}  # monotonic time of the last write per key
        self._background: set[asyncio.Task] = set()
        self._loading: dict[str, asyncio.Future[_Cached]] = {}

    async def authenticate(self, credential: str, scope: str = scopes.SCOPE_API) -> Principal:
        """The caller behind `credential`, for a surface that needs `scope` (access tokens are for the API only)."""
        if not credential or len(credential.encode()) > MAX_CREDENTIAL_BYTES:
            raise unauthenticated("missing or malformed credential")
        if looks_like_jwt(credential):
            if scope != scopes.SCOPE_API:
                raise unauthenticated(f"an access token cannot be used here: use an API key with the {scope!r} scope")
            return await self._from_token(credential)
        return await self._from_api_key(credential, scope)

    def forget_key(self, secret_sha256: str) -> None:
        self._keys.pop(secret_sha256, None)

    def forget_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def forget_user(self, user_id: str) -> None:
        for cache in (self._keys, self._sessions):
            for key, cached in list(cache.items()):
                if cached.user_id == user_id:
                    del cache[key]

    async def _from_token(self, token: str) -> Principal:
        try:
            claims = await self.signer.verify_fresh(token)
        except jwt.ExpiredSignatureError:
            raise unauthenticated("access token expired: refresh it or log in again", "TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise unauthenticated("invalid access token") from None
        # Role and disabled flag come from the store, so a demoted or disabled user loses access promptly.
        return await self._session_principal(claims.session_id, claims.user_id)

    async def _session_principal(self, session_id: str, user_id: str) -> Principal:
        now = time.monotonic()
        cached = self._sessions.get(session_id)
        if cached is None or cached.until < now:
            async with self.db.session() as session:
                row = (
                    await session.execute(
                        select(LoginSessionRow, UserRow)
                        .join(UserRow, UserRow.id == LoginSessionRow.user_id)
                        .where(LoginSessionRow.id == session_id)
                    )
                ).first()
            until = now + self.cache_seconds
            if row is None:
                cached = _Cached(None, "session ended: log in again", until, "TOKEN_EXPIRED")
            else:
                login, user = row
                if login.revoke_time is not None:
                    cached = _Cached(
                        None,
                        f"session revoked ({login.revoke_reason or 'signed out'}): log in again",
                        until,
                        "TOKEN_EXPIRED",
                        user.id,
                    )
                elif user.disabled:
                    cached = _Cached(None, "user disabled", until, "USER_DISABLED", user.id)
                else:
                    cached = _Cached(Principal(user.id, user.role), "", until, user_id=user.id)
            self._sessions[session_id] = cached
        if cached.principal is None or cached.user_id != user_id:
            raise unauthenticated(cached.reason or "invalid access token", cached.error_reason)
        return cached.principal

    async def _from_api_key(self, secret: str, scope: str) -> Principal:
        key_digest = digest(secret)
        now = time.monotonic()
        cached = self._keys.get(key_digest)
        if cached is None or cached.until < now:
            # One lookup per key at a time: a burst of calls on an expired entry shares it (no stampede).
            loading = self._loading.get(key_digest)
            if loading is None:
                loading = self._loading[key_digest] = asyncio.ensure_future(self._load_key(key_digest, now))
                loading.add_done_callback(lambda _: self._loading.pop(key_digest, None))
            cached = await asyncio.shield(loading)
            self._keys[key_digest] = cached
        if cached.principal is None:
            raise unauthenticated(cached.reason, cached.error_reason)
        if scope not in cached.scopes:
            raise TypecaseError(
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                f"this API key lacks the {scope!r} scope (it has: {', '.join(sorted(cached.scopes))})",
                {"scope": scope},
            )
        self._touch(cached.principal.api_key_id)
        return cached.principal

    async def _load_key(self, key_digest: str, now: float) -> _Cached:
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(ApiKeyRow, UserRow)
                    .join(UserRow, UserRow.id == ApiKeyRow.owner_id)
                    .where(ApiKeyRow.secret_sha256 == key_digest)
                )
            ).first()
        until = now + self.cache_seconds
        if row is None:
            return _Cached(None, "unknown API key", until)
        key, user = row
        if key.revoke_time is not None:
            return _Cached(None, "API key revoked", until, user_id=user.id)
        if key.expire_time is not None:
            if key.expire_time <= utcnow():
                return _Cached(None, "API key expired", until, user_id=user.id)
            until = min(until, now + (key.expire_time - utcnow()).total_seconds())
        if user.disabled:
            return _Cached(None, "user disabled", until, user_id=user.id)
        restriction = None
        if key.resources:
            restriction = KeyRestriction(
                frozenset((kind, ident) for kind, _, ident in (r.partition("/") for r in key.resources)),
                frozenset(key.actions.split()),
                key.rate_limit,
            )
        return _Cached(
            Principal(user.id, user.role, key.id, restriction=restriction),
            "",
            until,
            user_id=user.id,
            scopes=scopes.decode(key.scopes),
        )

    def _touch(self, api_key_id: str | None) -> None:
        """Record last use at most once a minute per key, off the request path."""
        if api_key_id is None:
            return
        now = time.monotonic()  # a timezone-aware utcnow() is made only to be written: ~1 us less on every call
        last = self._last_used.get(api_key_id)
        if last is not None and now - last < LAST_USED_SECONDS:
            return
        self._last_used[api_key_id] = now
        task = asyncio.create_task(self._write_last_used(api_key_id, utcnow()))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_last_used(self, api_key_id: str, when: datetime) -> None:
        try:
            async with self.db.session() as session:
                await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == api_key_id).values(last_used_time=when))
                await session.commit()
        except Exception:  # bookkeeping only: never fail a call over it
            log.warning("could not record last use of API key %s", api_key_id, exc_info=True)

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
