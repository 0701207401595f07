"""Per-model protection of upstreams: circuit breaker, concurrency limit, request/token rate limits, retry policy.

Everything that must hold across replicas lives in shared stores: the breaker in the Cache (Redis when
configured), concurrency slots in a Redis sorted set of leases, rate windows in the `limits` library's Redis
storage. Without Redis the same code runs on in-process stores (a single replica).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from tenacity import wait_exponential_jitter

from typecase.server.infra.cache import Cache, limits_storage, redis_client
from typecase.server.llm.providers import UpstreamError
from typecase.v1 import llm_pb2

log = logging.getLogger("typecase.llm")

CLOSED = llm_pb2.BREAKER_STATE_CLOSED
OPEN = llm_pb2.BREAKER_STATE_OPEN
HALF_OPEN = llm_pb2.BREAKER_STATE_HALF_OPEN


class BreakerOpen(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"circuit open; retry in {retry_after:.1f}s")
        self.retry_after = retry_after


class LimitExceeded(Exception):
    def __init__(self, what: str, retry_after: float | None):
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


# ------------------------------------------------------------------------------------------------ breaker


@dataclass(slots=True)
class Ticket:
    model_id: str
    probe: bool  # this request is the half-open probe
    dirty: bool  # failures were counted: a success must reset them


class Breaker:
    """Opens after `threshold` consecutive failed requests; after `cooldown` one probe request is let through,
    whose outcome closes or reopens it.

    State per model in the Cache: a failure counter, the time the open period ends, and the probe lock.
    The healthy path costs one read (`failures`); writes happen only on failures and on recovery.
    """

    def __init__(self, cache: Cache, threshold: int, cooldown: float):
        self.cache = cache
        self.threshold = threshold
        self.cooldown = cooldown
        self.counter_ttl = max(600.0, cooldown * 10)  # forget a stale streak eventually

    @staticmethod
    def _keys(model_id: str) -> tuple[str, str, str]:
        base = f"llm:breaker:{model_id}"
        return f"{base}:failures", f"{base}:open_until", f"{base}:probe"

    async def admit(self, model_id: str) -> Ticket:
        failures_key, open_key, probe_key = self._keys(model_id)
        failures = int(await self.cache.get(failures_key) or 0)
        if failures < self.threshold:
            return Ticket(model_id, probe=False, dirty=failures > 0)
        open_until = float(await self.cache.get(open_key) or 0)
        now = time.time()
        if now < open_until:
            raise BreakerOpen(open_until - now)
        if await self.cache.set_if_absent(probe_key, "1", ttl=self.cooldown):
            log.info("circuit of model %s half-open: sending a probe request", model_id)
            return Ticket(model_id, probe=True, dirty=True)
        raise BreakerOpen(1.0)  # another request is probing

    async def success(self, ticket: Ticket) -> bool:
        """Returns True when this success closed an open breaker."""
        if not ticket.dirty:
            return False
        failures_key, open_key, probe_key = self._keys(ticket.model_id)
        await self.cache.delete(failures_key, open_key, probe_key)
        if ticket.probe:
            log.info("circuit of model %s closed: the probe succeeded", ticket.model_id)
        return ticket.probe

    async def failure(self, ticket: Ticket) -> bool:
        """Returns True when this failure opened (or reopened) the breaker."""
        failures_key, open_key, probe_key = self._keys(ticket.model_id)
        failures = await self.cache.incr(failures_key, 1, ttl=self.counter_ttl)
        await self.cache.expire(failures_key, self.counter_ttl)
        if failures < self.threshold and not ticket.probe:
            return False
        await self.cache.set(open_key, repr(time.time() + self.cooldown), ttl=self.counter_ttl)
        if ticket.probe:
            await self.cache.delete(probe_key)
        log.warning(
            "circuit of model %s open for %gs after %d consecutive failures", ticket.model_id, self.cooldown, failures
        )
        return True

    async def release(self, ticket: Ticket) -> None:
        """The request ended without an upstream outcome (limits, cancellation): let another probe."""
        if ticket.probe:
            await self.cache.delete(self._keys(ticket.model_id)[2])

    async def state(self, model_id: str) -> tuple[int, int, float]:
        """(BreakerState, consecutive failures, open_until epoch seconds or 0)."""
        failures_key, open_key, _ = self._keys(model_id)
        failures = int(await self.cache.get(failures_key) or 0)
        if failures < self.threshold:
            return CLOSED, failures, 0.0
        open_until = float(await self.cache.get(open_key) or 0)
        return (OPEN if time.time() < open_until else HALF_OPEN), failures, open_until


# ---------------------------------------------------------------------------------------------- concurrency


class Concurrency(abc.ABC):
    """In-flight requests per model, with an optional cap. Waits up to `wait` seconds for a free slot."""

    @abc.abstractmethod
    async def acquire(self, model_id: str, limit: int, wait: float) -> str | None:
        """A lease id, or None when no slot freed up in time."""

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
        self._client = redis_client(redis_url, max_connections)
        self._prefix = prefix
        self._lease_ms = int(lease_seconds * 1000)
        self._replica = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._held: dict[str, set[str]] = {}
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._count = self._client.register_script(_COUNT)
        self._renewer: asyncio.Task | None = None

    def _key(self, model_id: str) -> str:
        return f"{self._prefix}llm:inflight:{model_id}"

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
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

    async def release(self, model_id: str, lease: str) -> None:
        held = self._held.get(model_id)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._held[model_id]
        await self._client.zrem(self._key(model_id), lease)

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


# ---------------------------------------------------------------------------------------------- rate limits


class RateLimits:
    """Requests per minute (moving window: exact) and tokens per minute (fixed window, charged with the actual
    usage after each call, so a window may overshoot by one request's tokens; admission needs budget left)."""

    def __init__(self, redis_url: str | None, prefix: str, max_connections: int):
        self.storage = limits_storage(redis_url, f"{prefix}llm:limits", max_connections)
        self.requests = MovingWindowRateLimiter(self.storage)
        self.tokens = FixedWindowRateLimiter(self.storage)

    async def admit(self, model_id: str, rpm: int, tpm: int, prompt_tokens: int) -> None:
        if tpm:
            item = RateLimitItemPerMinute(tpm)
            if not await self.tokens.test(item, "tpm", model_id, cost=max(1, min(prompt_tokens, tpm))):
                raise LimitExceeded("tokens per minute", await self._retry_after(self.tokens, item, "tpm", model_id))
        if rpm:
            item = RateLimitItemPerMinute(rpm)
            if not await self.requests.hit(item, "rpm", model_id):
                raise LimitExceeded(
                    "requests per minute", await self._retry_after(self.requests, item, "rpm", model_id)
                )

    async def charge_tokens(self, model_id: str, tpm: int, tokens: int) -> None:
        if tpm and tokens > 0:
            await self.tokens.hit(RateLimitItemPerMinute(tpm), "tpm", model_id, cost=tokens)

    @staticmethod
    async def _retry_after(limiter, item, *identifiers: str) -> float:
        stats = await limiter.get_window_stats(item, *identifiers)
        return max(0.1, stats.reset_time - time.time())


# ---------------------------------------------------------------------------------------------------- retry


class RetryWait:
    """tenacity wait: the upstream's Retry-After when it sent one, else exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float):
        self.backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, UpstreamError) and exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(retry_state)


def retryable(max_retry_after: float):
    def check(exc: BaseException) -> bool:
        return (
            isinstance(exc, UpstreamError)
            and exc.retryable
            and (exc.retry_after is None or exc.retry_after <= max_retry_after)
        )

    return check


# ------------------------------------------------------------------------------------------ status records


class StatusLog:
    """Last error and last success per model, shared through the Cache for ModelStatus."""

    SUCCESS_EVERY = 5.0  # seconds between writes of last_success per replica

    def __init__(self, cache: Cache):
        self.cache = cache
        self._written: dict[str, float] = {}

    async def success(self, model_id: str) -> None:
        now = time.time()
        if now - self._written.get(model_id, 0) >= self.SUCCESS_EVERY:
            self._written[model_id] = now
            await self.cache.set(f"llm:status:{model_id}:success", repr(now), ttl=7 * 86400)

    async def error(self, model_id: str, code: int, reason: str, message: str) -> None:
        record = json.dumps({"code": code, "reason": reason, "message": message[:1000], "time": time.time()})
        await self.cache.set(f"llm:status:{model_id}:error", record, ttl=7 * 86400)

    async def read(self, model_id: str) -> tuple[dict | None, float | None]:
        error = await self.cache.get(f"llm:status:{model_id}:error")
        success = await self.cache.get(f"llm:status:{model_id}:success")
        return (json.loads(error) if error else None), (float(success) if success else None)
