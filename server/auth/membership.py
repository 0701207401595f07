"""The groups a caller belongs to, for every authenticated call (Principal.group_ids).

Loaded per call and cached briefly in the shared cache (Redis with replicas, in-process otherwise) under one key per
user. A membership change deletes that key, so on every replica the member's next call reads the new set: removing
bob from "research" closes what was shared with research to bob at once, not after a TTL. The TTL
(`group_membership_cache_seconds`) only bounds how long an entry outlives a change made behind the server's back
(a manual SQL edit). If the cache is unreachable the groups are read from SQL: slower, never stale.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import select

from typecase.server.auth.models import GroupMemberRow
from typecase.server.infra.cache import Cache
from typecase.server.infra.sql import Database

log = logging.getLogger("typecase.auth")
KEY = "auth:groups:{}"


class Memberships:
    def __init__(self, db: Database, cache: Cache, ttl_seconds: float, max_groups: int):
        self.db = db
        self.cache = cache
        self.ttl_seconds = ttl_seconds
        self.max_groups = max_groups

    async def groups_of(self, user_id: str) -> tuple[str, ...]:
        key = KEY.format(user_id)
        if self.ttl_seconds > 0:
            try:
                cached = await self.cache.get(key)
            except ConnectionError:
                cached = None
            if cached is not None:
                return tuple(json.loads(cached))
        async with self.db.session() as session:
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
        if self.ttl_seconds > 0:
            try:
                await self.cache.set(key, json.dumps(ids), ttl=self.ttl_seconds)
            except ConnectionError:
                log.warning("could not cache the groups of user %s", user_id)
        return ids

    async def forget(self, *user_ids: str) -> None:
        """Call after the memberships of these users changed (committed): their next call reloads."""
        if user_ids:
            await self.cache.delete(*(KEY.format(u) for u in user_ids))
