"""Per-model protection of upstreams: circuit breaker, concurrency limit, request/token rate limits, retry policy.

Everything that must hold across replicas lives in shared stores: the breaker in the Cache (Redis when
configured), concurrency slots in a Redis sorted set of leases (infra/slots.py), rate windows in the `limits`
library's Redis storage. Without Redis the same code runs on in-process stores (a single replica); which one is
resources.py's decision, injected by app.py.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter
from tenacity import wait_exponential_jitter

from typecase.server.infra.cache import Cache
from typecase.server.infra.rate_windows import moving_window_limiter
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

    def gate(self, model_id: str) -> tuple[str | None, int]:
        """(the Redis key of the model's failure counter, or None off Redis; the count that opens the breaker): the
        concurrency slot's script reads the counter when it takes the slot (Concurrency.acquire_gated)."""
        return self.cache.redis_key(self._keys(model_id)[0]), self.threshold

    def admit_counted(self, model_id: str, failures: int) -> Ticket | None:
        """admit, with the failure counter already read: a ticket while the breaker is closed, None otherwise (then
        admit decides between open and a half-open probe)."""
        return Ticket(model_id, probe=False, dirty=failures > 0) if failures < self.threshold else None

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


# ---------------------------------------------------------------------------------------------- rate limits


class RateLimits:
    """Requests per minute (moving window: exact) and tokens per minute (fixed window, charged with the actual
    usage after each call, so a window may overshoot by one request's tokens; admission needs budget left)."""

    def __init__(self, storage):
        """`storage`: a `limits` async storage (Resources.limits_storage: Redis, or this process's memory)."""
        self.storage = storage
        self.requests = moving_window_limiter(self.storage)
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
