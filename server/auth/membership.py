"""The groups a caller belongs to and its role's permissions, for every authenticated call (Principal.group_ids,
role, permissions).

Loaded per call and cached briefly in the shared cache (Redis with replicas, in-process otherwise) under one key per
user. A membership change, a role assignment or a change to a custom role's permissions deletes the keys of the
users concerned, so on every replica their next call reads the new state: removing bob from "research" closes what
was shared with research to bob at once, and demoting him takes his permissions at once, not after a TTL. The TTL
(`group_membership_cache_seconds`) only bounds how long an entry outlives a change made behind the server's back
(a manual SQL edit). If the cache is unreachable the groups are read from SQL: slower, never stale. On Redis the
read rides in the script that hits the caller's rate windows (auth/guard.py): one round trip per call, not two.

The cached text is decoded once per distinct value (a small map from text to Access): decoding is a pure function
of the text, so a change, which changes the text, is seen at once; it saved ~8 us of every call (bench/llm).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from typecase.server.auth import permissions
from typecase.server.auth.models import GroupMemberRow, RoleRow, UserRow
from typecase.server.infra.cache import Cache
from typecase.server.infra.rate_windows import NOT_READ
from typecase.server.infra.sql import Database

log = logging.getLogger("typecase.auth")
KEY = "auth:access:{}"
DECODED_MAX_ENTRIES = 4096  # distinct cached texts kept decoded (about one per active user); emptied when full


@dataclass(frozen=True)
class Access:
    group_ids: tuple[str, ...]
    role: str  # "" when the user is gone (the credential check fails on its own)
    permissions: frozenset[str]


class Memberships:
    def __init__(self, db: Database, cache: Cache, ttl_seconds: float, max_groups: int):
        self.db = db
        self.cache = cache
        self.ttl_seconds = ttl_seconds
        self.max_groups = max_groups
        self._decoded: dict[bytes | str, Access] = {}

    async def groups_of(self, user_id: str) -> tuple[str, ...]:
        return (await self.access_of(user_id)).group_ids

    def redis_key(self, user_id: str) -> str | None:
        """The Redis key of the user's cached access, when it is cached in Redis: the guard reads it in the round
        trip that hits the caller's rate windows (rate_windows.hit_and_read) and hands it to access_of."""
        return self.cache.redis_key(KEY.format(user_id)) if self.ttl_seconds > 0 else None

    async def access_of(self, user_id: str, cached: Any = NOT_READ) -> Access:
        """`cached`: the cached text as already read from the cache (None: absent), or NOT_READ."""
        key = KEY.format(user_id)
        if self.ttl_seconds > 0:
            if cached is NOT_READ:
                try:
                    cached = await self.cache.get(key)
                except ConnectionError:
                    cached = None
            if cached is not None:
                return self._decode(cached)
        async with self.db.session() as session:
            role = await session.scalar(select(UserRow.role).where(UserRow.id == user_id)) or ""
            granted = permissions.built_in(role)
            if granted is None:
                custom = await session.get(RoleRow, role) if role else None
                # A role name no row defines (deleted behind the server's back) grants nothing.
                granted = frozenset(custom.permissions or ()) & permissions.ALL if custom else frozenset()
            ids = tuple(
                (
                    await session.scalars(
                        select(GroupMemberRow.group_id)
                        .where(GroupMemberRow.user_id == user_id)
                        .order_by(GroupMemberRow.group_id)
                        .limit(self.max_groups)
                    )
                ).all()
            )
        access = Access(ids, role, granted)
        if self.ttl_seconds > 0:
            try:
                await self.cache.set(key, json.dumps({"g": ids, "r": role, "p": sorted(granted)}), ttl=self.ttl_seconds)
            except ConnectionError:
                log.warning("could not cache the groups and role of user %s", user_id)
        return access

    def _decode(self, cached: bytes | str) -> Access:
        access = self._decoded.get(cached)
        if access is None:
            data = json.loads(cached)
            access = Access(tuple(data["g"]), data["r"], frozenset(data["p"]))
            if len(self._decoded) >= DECODED_MAX_ENTRIES:
                self._decoded.clear()
            self._decoded[cached] = access
        return access

    async def forget(self, *user_ids: str) -> None:
        """Call after the memberships or role of these users changed (committed): their next call reloads."""
        if user_ids:
            await self.cache.delete(*(KEY.format(u) for u in user_ids))
