"""Moving windows hit in turn (auth's per-key then per-user limits): on Redis one script, in memory one hit each;
either way limits' own limiter sees the same windows."""

from __future__ import annotations

import limits
import pytest
import redis.asyncio as aioredis

from typecase.server.infra.cache import limits_storage
from typecase.server.infra.rate_windows import (
    NOT_READ,
    RedisMovingWindow,
    hit_and_read,
    moving_window_limiter,
)

from .infra_support import unique


async def hit_in_turn(limiter, hits) -> int:
    return (await hit_and_read(limiter, hits, None))[0]


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest):
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    limiter = moving_window_limiter(limits_storage(url, unique("tc-test-rl")))
    assert isinstance(limiter, RedisMovingWindow) == (request.param == "redis")
    return limiter


async def test_hits_in_turn_stop_at_the_first_full_window_and_keep_the_ones_before(limiter) -> None:
    per_key, per_user = limits.parse("3/minute"), limits.parse("2/minute")
    hits = [(per_key, ("api_key", "k1")), (per_user, ("user", "u1"))]
    assert await hit_in_turn(limiter, hits) == -1
    assert await hit_in_turn(limiter, hits) == -1
    assert await hit_in_turn(limiter, hits) == 1  # the user's window is full; the key's took its third hit
    assert not await limiter.test(per_key, "api_key", "k1")
    assert not await limiter.test(per_user, "user", "u1")
    assert await hit_in_turn(limiter, hits) == 0  # now the key's window is the first one full
    stats = await limiter.get_window_stats(per_user, "user", "u1")
    assert stats.remaining == 0
    other = [(per_key, ("api_key", "k2")), (per_user, ("user", "u2"))]
    assert await hit_in_turn(limiter, other) == -1  # windows are per identity
    assert (await limiter.get_window_stats(per_key, "api_key", "k2")).remaining == 2
    await limiter.clear(per_user, "user", "u1")
    assert await limiter.hit(per_user, "user", "u1")  # limits' own calls work on the windows hit in turn


async def test_a_key_read_along_comes_back_when_every_window_took_its_hit(limiter, redis_url) -> None:
    """On Redis one script hits the windows and reads the key (the caller's cached access, auth/guard.py); in
    memory, or past a full window, the caller reads it itself."""
    name = unique("tc-test-read")
    client = aioredis.from_url(redis_url)
    try:
        await client.set(name, b"cached", ex=60)
        hits = [(limits.parse("1/minute"), ("user", unique("u")))]
        on_redis = isinstance(limiter, RedisMovingWindow)
        assert await hit_and_read(limiter, hits, name) == (-1, b"cached" if on_redis else NOT_READ)
        assert await hit_and_read(limiter, hits, name) == (0, NOT_READ)  # refused: nothing read
        fresh = [(limits.parse("1/minute"), ("user", unique("u")))]
        assert await hit_and_read(limiter, fresh, unique("tc-test-absent")) == (-1, None if on_redis else NOT_READ)
    finally:
        await client.delete(name)
        await client.aclose()
