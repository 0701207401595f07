"""Counted slots per key (in-flight requests per model), with an optional cap: in-process, or leases in a Redis
sorted set shared by every replica.

The embedded implementation counts in this process; the Redis one scores each lease by its expiry and renews the
leases this replica holds, so a crashed replica's slots free themselves within one lease period. Which one runs is
resources.py's decision (redis_url); llm/inference.py takes a slot around each upstream call.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid

from typecase.server.infra.cache import redis_client

log = logging.getLogger("typecase.llm")  # its one user: in-flight requests per model


class Concurrency(abc.ABC):
    """In-flight requests per model, with an optional cap. Waits up to `wait` seconds for a free slot."""

    @abc.abstractmethod
    async def acquire(self, model_id: str, limit: int, wait: float) -> str | None:
        """A lease id, or None when no slot freed up in time."""

    async def acquire_gated(
        self, model_id: str, limit: int, wait: float, gate_key: str | None, gate: int
    ) -> tuple[str | None, int] | None:
        """acquire, unless the counter at the Redis key `gate_key` has reached `gate` (a model's breaker failures:
        llm/inference.py), read in the same round trip: (lease or None, the counter). None when not on Redis: the
        caller reads the counter and acquires separately."""
        return None

    @abc.abstractmethod
    async def release(self, model_id: str, lease: str) -> None: ...

    @abc.abstractmethod
    async def count(self, model_id: str) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalConcurrency(Concurrency):
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._freed: dict[str, asyncio.Condition] = {}
        self._ids = itertools.count()

    async def acquire(self, model_id: str, limit: int, wait: float) -> str | None:
        count = self._counts.get(model_id, 0)
        if limit and count >= limit:
            freed = self._freed.setdefault(model_id, asyncio.Condition())
            try:
                async with asyncio.timeout(wait), freed:
                    await freed.wait_for(lambda: self._counts.get(model_id, 0) < limit)
            except TimeoutError:
                return None
        self._counts[model_id] = self._counts.get(model_id, 0) + 1
        return str(next(self._ids))

    async def release(self, model_id: str, lease: str) -> None:
        self._counts[model_id] -= 1
        if (freed := self._freed.get(model_id)) is not None:
            async with freed:
                freed.notify()

    async def count(self, model_id: str) -> int:
        return self._counts.get(model_id, 0)


# KEYS[1]: the model's lease set. ARGV: lease id, limit (0 = none), lease ms. Redis time, so clocks need not agree.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""
# _ACQUIRE behind a gate. KEYS[2]: a counter; ARGV[4]: the gate. {1 or 0 as _ACQUIRE, the counter}; a counter at or
# over the gate takes nothing.
_ACQUIRE_GATED = """
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if counter >= tonumber(ARGV[4]) then return {0, counter} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return {0, counter} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return {1, counter}
"""
_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""
_COUNT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisConcurrency(Concurrency):
    """Slots are leases in a sorted set scored by expiry; a replica renews its leases while it holds them, so a
    crashed replica's slots free themselves within one lease period."""

    POLL = 0.02

    def __init__(self, redis_url: str, prefix: str, lease_seconds: float, max_connections: int):
        """`prefix`: of each key's lease set (Resources.slots: `typecase:llm:inflight:` for models)."""
        self._client = redis_client(redis_url, max_connections)
        self._prefix = prefix
        self._lease_ms = int(lease_seconds * 1000)
        self._replica = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._held: dict[str, set[str]] = {}
        self._acquire = self._client.register_script(_ACQUIRE)
        self._acquire_gated = self._client.register_script(_ACQUIRE_GATED)
        self._renew = self._client.register_script(_RENEW)
        self._count = self._client.register_script(_COUNT)
        self._renewer: asyncio.Task | None = None
        # Leases being released per model, with the future their callers wait on, and the task sending them.
        self._releasing: dict[str, tuple[list[str], asyncio.Future]] = {}
        self._releaser: asyncio.Task | None = None

    def _key(self, model_id: str) -> str:
        return f"{self._prefix}{model_id}"

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._releaser is not None:
            await asyncio.gather(self._releaser, return_exceptions=True)  # releases under way reach Redis
        await self._client.aclose()

    async def acquire(self, model_id: str, limit: int, wait: float) -> str | None:
        lease = f"{self._replica}:{next(self._ids)}"
        deadline = time.monotonic() + wait
        while not await self._acquire(keys=[self._key(model_id)], args=[lease, limit, self._lease_ms]):
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.POLL * (0.5 + random.random()))
        self._held.setdefault(model_id, set()).add(lease)
        return lease

    async def acquire_gated(
        self, model_id: str, limit: int, wait: float, gate_key: str | None, gate: int
    ) -> tuple[str | None, int] | None:
        if gate_key is None:
            return None
        lease = f"{self._replica}:{next(self._ids)}"
        deadline = time.monotonic() + wait
        while True:
            taken, counter = await self._acquire_gated(
                keys=[self._key(model_id), gate_key], args=[lease, limit, self._lease_ms, gate]
            )
            if taken:
                self._held.setdefault(model_id, set()).add(lease)
                return lease, int(counter)
            if counter >= gate or time.monotonic() >= deadline:
                return None, int(counter)
            await asyncio.sleep(self.POLL * (0.5 + random.random()))

    async def release(self, model_id: str, lease: str) -> None:
        held = self._held.get(model_id)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._held[model_id]
        # Releases made while one is on its way go together in the next ZREM (turns that end together pay one round
        # trip), as event-log appends do. A process that dies before it gets there leaves leases that expire.
        pending = self._releasing.get(model_id)
        if pending is None:
            pending = self._releasing[model_id] = ([], asyncio.get_running_loop().create_future())
        pending[0].append(lease)
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.create_task(self._release_pending(), name="slots-release")
        await asyncio.shield(pending[1])  # shared by the batch: one caller's cancellation must not end it

    async def _release_pending(self) -> None:
        while self._releasing:
            batches, self._releasing = self._releasing, {}
            for model_id, (leases, done) in batches.items():
                try:
                    await self._client.zrem(self._key(model_id), *leases)
                except asyncio.CancelledError:
                    for _, waited in batches.values():
                        waited.cancel()  # no caller waits forever (a done one ignores it)
                    raise
                except Exception as exc:
                    done.set_exception(exc)
                    done.exception()  # callers that went away must not leave it "never retrieved"
                else:
                    done.set_result(None)

    async def count(self, model_id: str) -> int:
        return int(await self._count(keys=[self._key(model_id)]))

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            for model_id, leases in list(self._held.items()):
                if leases:
                    try:
                        await self._renew(keys=[self._key(model_id)], args=[self._lease_ms, *leases])
                    except Exception:
                        log.warning("could not renew concurrency leases of model %s", model_id, exc_info=True)
