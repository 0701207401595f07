"""The embedded (in-process) `limits` storage behind the auth and LLM rate limits."""

from __future__ import annotations

import asyncio

import limits
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from typecase.server.infra.cache import limits_storage
from typecase.server.infra.rate_windows import MemoryMovingWindow, RedisMovingWindow, moving_window_limiter


async def test_moving_window_holds_and_sweeps_expired_entries_without_threads():
    storage = limits_storage(None, "test")
    limiter = MovingWindowRateLimiter(storage)
    per_second = limits.parse("5/second")
    assert [await limiter.hit(per_second, "key") for _ in range(7)] == [True] * 5 + [False] * 2
    assert await limiter.hit(per_second, "other")  # limits are per identity

    await asyncio.sleep(1.1)
    storage._next_sweep = 0.0  # the next hit sweeps
    assert await limiter.hit(per_second, "key")  # the window moved on
    assert [len(storage.events[k]) for k in sorted(storage.events)] == [1]  # expired entries gone, "other" too
    # limits 5.8's own sweep hands every key to a worker thread on every hit; this one runs inline
    assert asyncio.get_running_loop()._default_executor is None


async def test_fixed_window_counts_expire():
    storage = limits_storage(None, "test")
    limiter = FixedWindowRateLimiter(storage)
    item = limits.parse("3/second")
    assert await limiter.hit(item, "tpm", cost=3) and not await limiter.test(item, "tpm")
    await asyncio.sleep(1.1)
    storage._next_sweep = 0.0
    assert await limiter.test(item, "tpm")
    await limiter.hit(item, "tpm")  # sweeps the expired counter, starts a new one
    assert list(storage.storage.values()) == [1]


async def test_lean_moving_window_keeps_the_windows_limits_own_limiter_reads():
    storage = limits_storage(None, "test")
    lean = moving_window_limiter(storage)
    assert isinstance(lean, MemoryMovingWindow)
    reference = MovingWindowRateLimiter(storage)
    per_second = limits.parse("3/second")
    assert [await lean.hit(per_second, "key") for _ in range(2)] == [True, True]
    assert await reference.hit(per_second, "key")  # both take entries from one window
    assert not await lean.hit(per_second, "key") and not await reference.test(per_second, "key")
    assert (await reference.get_window_stats(per_second, "key")).remaining == 0
    assert await lean.hit(per_second, "other")  # limits are per identity
    assert not await lean.hit(per_second, "key", cost=4)  # more than the limit at once
    await reference.clear(per_second, "key")
    assert await lean.hit(per_second, "key", cost=3) and not await lean.hit(per_second, "key")
    await asyncio.sleep(1.1)
    assert await lean.hit(per_second, "key")  # the window moved on
    # Redis gets its one-script limiter (tests/infra/test_rate_windows.py), still limits' own underneath
    redis_limiter = moving_window_limiter(limits_storage("redis://127.0.0.1:6379/0", "test"))
    assert isinstance(redis_limiter, RedisMovingWindow) and isinstance(redis_limiter, MovingWindowRateLimiter)
