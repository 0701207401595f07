"""Contract tests for the cache/bus: one suite, run against MemoryCache and RedisCache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from typecase.server.infra.cache import Cache, CacheUnavailable, RedisCache, create_cache
from typecase.server.infra.cache_memory import MemoryCache
from typecase.server.infra.journal import JournaledMemoryCache

from .infra_support import unique


@pytest.fixture(params=["memory", "memory+journal", "redis"])
async def cache(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Cache]:
    if request.param.startswith("memory"):
        c: Cache = MemoryCache() if request.param == "memory" else JournaledMemoryCache(tmp_path / "streams.db")
        await c.start()
        yield c
        await c.stop()
        return
    url = request.getfixturevalue("redis_url")
    prefix = unique("typecase_test") + ":"
    c = RedisCache(url, key_prefix=prefix)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()
        raw = aioredis.from_url(url)
        try:
            keys = [k async for k in raw.scan_iter(match=prefix + "*")]
            if keys:
                await raw.delete(*keys)
        finally:
            await raw.aclose()


# ----------------------------------------------------------------------------------------- key/value


async def test_values_round_trip_as_bytes(cache: Cache) -> None:
    assert await cache.get("missing") is None
    await cache.set("b", b"\x00\xffraw")
    await cache.set("s", "héllo")
    await cache.set("i", 42)
    await cache.set("f", 1.5)
    assert [await cache.get(k) for k in "bsif"] == [b"\x00\xffraw", "héllo".encode(), b"42", b"1.5"]
    assert await cache.delete("b", "s", "nope") == 2
    assert await cache.get("b") is None and await cache.get("i") == b"42"
    with pytest.raises(TypeError):
        await cache.set("x", True)


async def test_ttl_expires_and_set_clears_ttl(cache: Cache) -> None:
    await cache.set("short", "v", ttl=0.15)
    await cache.set("long", "v", ttl=30)
    await cache.set("again", "v", ttl=0.15)
    await cache.set("again", "v2")  # a plain set replaces the value and its TTL, like Redis SET
    assert await cache.get("short") == b"v"
    await asyncio.sleep(0.3)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"v"
    assert await cache.get("again") == b"v2"


async def test_expire(cache: Cache) -> None:
    assert await cache.expire("missing", 1) is False
    await cache.set("k", "v")
    assert await cache.expire("k", 0.15) is True
    await asyncio.sleep(0.3)
    assert await cache.get("k") is None
    with pytest.raises(ValueError):
        await cache.expire("k", 0)


async def test_values_under_a_prefix_are_live_values_only_and_taken_literally(cache: Cache) -> None:
    await cache.set("stats:a", "1")
    await cache.set("stats:b", "2", ttl=0.1)
    await cache.set("stats*x", "glob")  # a pattern character in a key is not a wildcard
    await cache.set("other:c", "3")
    await cache.xadd("stats:stream", {"f": "v"})  # not a value
    assert await cache.values_under("stats:") == {"stats:a": b"1", "stats:b": b"2"}
    assert await cache.values_under("stats*") == {"stats*x": b"glob"}
    await asyncio.sleep(0.25)
    assert await cache.values_under("stats:") == {"stats:a": b"1"}
    assert await cache.values_under("nothing:") == {}


async def test_incr_counts_and_sets_ttl_only_on_creation(cache: Cache) -> None:
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 5) == 6
    assert await cache.incr("n", -2) == 4
    assert await cache.get("n") == b"4"

    assert await cache.incr("window", ttl=0.4) == 1
    await asyncio.sleep(0.25)
    assert await cache.incr("window", ttl=0.4) == 2  # must not push the window's expiry back
    await asyncio.sleep(0.25)
    assert await cache.get("window") is None
    assert await cache.incr("window", ttl=0.4) == 1

    await cache.set("text", "abc")
    with pytest.raises(ValueError):
        await cache.incr("text")


async def test_set_if_absent_and_delete_if_equals_make_a_lock(cache: Cache) -> None:
    assert await cache.set_if_absent("lock", "owner-a", ttl=0.2) is True
    assert await cache.set_if_absent("lock", "owner-b", ttl=0.2) is False
    assert await cache.get("lock") == b"owner-a"
    assert await cache.delete_if_equals("lock", "owner-b") is False  # not the owner: lock kept
    assert await cache.get("lock") == b"owner-a"
    await asyncio.sleep(0.35)  # an abandoned lock expires
    assert await cache.set_if_absent("lock", "owner-b") is True
    assert await cache.delete_if_equals("lock", "owner-b") is True
    assert await cache.get("lock") is None


async def test_set_if_absent_is_exclusive_under_concurrency(cache: Cache) -> None:
    results = await asyncio.gather(*(cache.set_if_absent("race", str(i), ttl=5) for i in range(20)))
    assert results.count(True) == 1


# ----------------------------------------------------------------------------------------- pub/sub


async def test_publish_reaches_every_current_subscriber_of_the_channel(cache: Cache) -> None:
    async with cache.subscribe("news", "alerts") as first, cache.subscribe("news") as second:
        assert await cache.publish("news", b"one") == 2
        assert await cache.publish("alerts", "two") == 1
        assert await cache.publish("other", b"x") == 0
        got_first = [await asyncio.wait_for(anext(first), 2) for _ in range(2)]
        got_second = await asyncio.wait_for(anext(second), 2)
        assert got_first == [("news", b"one"), ("alerts", b"two")]
        assert got_second == ("news", b"one")
        with pytest.raises(TimeoutError):  # nothing from "other" leaked in
            await asyncio.wait_for(anext(second), 0.2)
    assert await cache.publish("news", b"after") == 0  # leaving the block unsubscribes


async def test_messages_keep_publish_order(cache: Cache) -> None:
    async with cache.subscribe("seq") as messages:
        for i in range(50):
            await cache.publish("seq", str(i))
        got = [(await asyncio.wait_for(anext(messages), 2))[1] for _ in range(50)]
    assert got == [str(i).encode() for i in range(50)]


# ----------------------------------------------------------------------------------------- streams


async def test_stream_ids_increase_and_xrange_pages(cache: Cache) -> None:
    ids = [await cache.xadd("events", {"seq": str(i), "blob": b"\x01"}) for i in range(10)]
    parsed = [tuple(map(int, i.split("-"))) for i in ids]
    assert parsed == sorted(parsed) and len(set(parsed)) == 10

    entries = await cache.xrange("events")
    assert [e[0] for e in entries] == ids
    assert entries[0][1] == {"seq": b"0", "blob": b"\x01"}
    assert [e[1]["seq"] for e in await cache.xrange("events", after_id=ids[6])] == [b"7", b"8", b"9"]
    assert [e[0] for e in await cache.xrange("events", after_id=ids[2], count=2)] == ids[3:5]
    assert await cache.xrange("events", after_id=ids[-1]) == []
    assert await cache.xrange("nothing") == []


async def test_xadd_many_appends_in_order_and_sets_ttls(cache: Cache) -> None:
    await cache.xadd_many([("a", {"n": "1"}, None), ("b", {"n": "1"}, 0.3), ("a", {"n": "2"}, 60)])
    assert [e[1]["n"] for e in await cache.xrange("a")] == [b"1", b"2"]
    await asyncio.sleep(0.5)
    assert await cache.xrange("b") == []  # expired
    assert len(await cache.xrange("a")) == 2


async def test_xadd_many_keeps_a_large_batch_of_binary_multi_field_entries(cache: Cache) -> None:
    """One batch as a busy replica's event log writes it: many streams, entries of several fields, binary values."""
    batch = [
        (f"s{i % 7}", {"s": str(i), "m": bytes([0, i % 256, 255]) * 50, "t": "1"}, 60 if i % 3 else None)
        for i in range(1500)
    ]
    await cache.xadd_many(batch)
    for k in range(7):
        entries = await cache.xrange(f"s{k}")
        assert [int(e[1]["s"]) for e in entries] == list(range(k, 1500, 7))
        assert all(e[1]["m"] == bytes([0, int(e[1]["s"]) % 256, 255]) * 50 and e[1]["t"] == b"1" for e in entries)
    await cache.xadd_many([])  # nothing to write is no error


async def test_xadd_events_stores_the_fields_xadd_many_would(cache: Cache) -> None:
    """Event-log entries keep the stream layout {s, m, t} (readers and entries written before parse it), whatever
    bytes a payload holds (none, separators, a large one) and however many a batch has."""
    payloads = [b"", b"1 2 3,4", bytes(range(256)) * 40, b"\x00\r\n"]
    batch = [
        (f"e{i % 5}", i + 1, payloads[i % 4] + str(i).encode(), i >= 1495, 60 if i % 3 else None) for i in range(1500)
    ]
    await cache.xadd_events(batch)
    await cache.xadd_events([("short", 1, b"x", False, 0.3), ("short", 2, b"y", False, None)])
    await cache.xadd_events([])  # nothing to write is no error
    for k in range(5):
        mine = [b for b in batch if b[0] == f"e{k}"]
        expected = [{"s": str(seq).encode(), "m": m, **({"t": b"1"} if end else {})} for _, seq, m, end, _ in mine]
        assert [fields for _, fields in await cache.xrange(f"e{k}")] == expected
    await asyncio.sleep(0.5)
    assert await cache.xrange("short") == []  # the ttl of its first entry, not renewed by the second


async def test_event_log_appends_from_many_tasks_keep_each_logs_order(cache: Cache) -> None:
    """Concurrent appends are written in shared batches; each log still holds its entries once, in seq order."""
    from typecase.server.infra.eventlog import Entry, EventLog

    log = EventLog(cache, ttl_seconds=60, running_ttl_seconds=120, key=lambda log_id: f"log:{log_id}")

    async def task(log_id: str) -> None:
        for seq in range(1, 21):
            await log.append(log_id, Entry(seq, f"{log_id}-{seq}".encode(), seq == 20))

    await asyncio.gather(*(task(f"t{i}") for i in range(30)))
    for i in range(30):
        entries = await log.entries(f"t{i}")
        assert [e.seq for e in entries] == list(range(1, 21))
        assert [e.payload for e in entries] == [f"t{i}-{seq}".encode() for seq in range(1, 21)]
        assert entries[-1].terminal and not any(e.terminal for e in entries[:-1])


async def test_an_event_log_appender_cancelled_while_waiting_leaves_its_batch_whole(cache: Cache) -> None:
    from typecase.server.infra.eventlog import Entry, EventLog

    log = EventLog(cache, ttl_seconds=60, running_ttl_seconds=120, key=lambda log_id: f"log:{log_id}")
    first = asyncio.create_task(log.append("c", Entry(1, b"one", False)))
    second = asyncio.create_task(log.append("c", Entry(2, b"two", True)))
    await asyncio.sleep(0)  # both wait for the batch that holds them
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [e.payload for e in await log.entries("c")] == [b"one", b"two"]  # its entry was written all the same


async def test_stream_maxlen_trims_oldest(cache: Cache) -> None:
    for i in range(8):
        await cache.xadd("capped", {"i": str(i)}, maxlen=3)
    assert [e[1]["i"] for e in await cache.xrange("capped")] == [b"5", b"6", b"7"]


async def test_xread_returns_backlog_then_blocks_until_xadd(cache: Cache) -> None:
    first = await cache.xadd("live", {"n": "1"})
    assert [e[0] for e in await cache.xread("live", "0-0", block_ms=100)] == [first]
    assert await cache.xread("live", first) == []  # no block_ms: returns at once

    async def add_later() -> str:
        await asyncio.sleep(0.3)
        return await cache.xadd("live", {"n": "2"})

    adder = asyncio.create_task(add_later())
    started = time.monotonic()
    got = await cache.xread("live", first, block_ms=5000)
    added_at = time.monotonic()
    second = await adder
    assert [e[0] for e in got] == [second] and got[0][1] == {"n": b"2"}
    assert 0.25 <= added_at - started < 4  # blocked until the xadd, not for the whole block_ms (5 s)


async def test_xread_wakes_on_an_add_and_times_out(cache: Cache) -> None:
    waiter = asyncio.create_task(cache.xread("wake", "$", block_ms=3000))
    await asyncio.sleep(0.1)  # let it block
    t0 = time.monotonic()
    eid = await cache.xadd("wake", {"k": "v"})
    got = await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - t0 < 1.5  # woken by the add, not by its 3 s block ending (loose: a loaded CI machine)
    assert [e[0] for e in got] == [eid]

    t0 = time.monotonic()
    assert await cache.xread("wake", eid, block_ms=200) == []
    assert 0.18 <= time.monotonic() - t0 < 1.0


async def test_xread_dollar_skips_existing_entries(cache: Cache) -> None:
    await cache.xadd("s", {"old": "1"})
    waiter = asyncio.create_task(cache.xread("s", "$", block_ms=2000))
    await asyncio.sleep(0.1)
    await cache.xadd("s", {"new": "1"})
    got = await asyncio.wait_for(waiter, 3)
    assert [list(f) for _, f in got] == [["new"]]


async def test_stream_delete_and_expire(cache: Cache) -> None:
    await cache.xadd("gone", {"a": "1"})
    assert await cache.delete_stream("gone") is True
    assert await cache.delete_stream("gone") is False
    assert await cache.xrange("gone") == []

    await cache.xadd("ttl", {"a": "1"})
    assert await cache.expire("ttl", 0.15) is True
    await asyncio.sleep(0.3)
    assert await cache.xrange("ttl") == []


async def test_health(cache: Cache) -> None:
    ok, detail = await cache.health()
    assert ok and "ok" in detail


# ----------------------------------------------------------------------------------------- Redis specifics


async def test_redis_key_prefix_isolates_namespaces(redis_url: str) -> None:
    a = RedisCache(redis_url, key_prefix=unique("tc_a") + ":")
    b = RedisCache(redis_url, key_prefix=unique("tc_b") + ":")
    try:
        await a.set("k", "from-a", ttl=10)
        assert await b.get("k") is None
        async with b.subscribe("ch") as messages:
            assert await a.publish("ch", "x") == 0
            assert await b.publish("ch", "y") == 1
            assert await asyncio.wait_for(anext(messages), 2) == ("ch", b"y")
        await a.delete("k")
    finally:
        await a.stop()
        await b.stop()


async def test_redis_unreachable_raises_cache_unavailable_and_masks_password() -> None:
    c = RedisCache("redis://:sekret-pw@127.0.0.1:1/0", connect_timeout=1, retries=1)
    assert "sekret-pw" not in repr(c)
    try:
        with pytest.raises(CacheUnavailable) as info:
            await asyncio.wait_for(c.get("k"), 10)
        assert "sekret-pw" not in str(info.value)
        ok, detail = await c.health()
        assert not ok and "sekret-pw" not in detail
    finally:
        await c.stop()


async def test_redis_reconnects_after_connections_are_killed(redis_url: str) -> None:
    cache = RedisCache(redis_url, key_prefix=unique("tc_reconnect") + ":")
    admin = aioredis.from_url(redis_url)
    try:
        await cache.set("k", "v", ttl=10)
        my_id = await cache._client.client_id()
        # Kill our pooled connection from outside, as a Redis restart or failover would.
        assert await admin.client_kill_filter(_id=my_id) == 1
        assert await cache.get("k") == b"v"  # the pool notices and reconnects transparently
        assert await cache._client.client_id() != my_id
        await cache.delete("k")
    finally:
        await admin.aclose()
        await cache.stop()


async def test_redis_commands_beyond_the_pool_size_wait_for_a_connection_and_all_complete(redis_url: str) -> None:
    """Idle connections are handed out without the pool's Condition; callers beyond max_connections still wait for
    one released, and every command gets its own reply."""
    cache = RedisCache(redis_url, key_prefix=unique("tc_pool") + ":", max_connections=3)
    try:
        await asyncio.gather(*(cache.set(f"k{i}", str(i), ttl=10) for i in range(200)))
        values = await asyncio.gather(*(cache.get(f"k{i}") for i in range(200)))
        assert values == [str(i).encode() for i in range(200)]
        pool = cache._client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
        await cache.delete(*(f"k{i}" for i in range(200)))
    finally:
        await cache.stop()


def test_create_cache_picks_implementation() -> None:
    assert isinstance(create_cache(None), MemoryCache)
    assert isinstance(create_cache(None, streams_file=Path("/tmp/never-opened.db")), JournaledMemoryCache)
    assert isinstance(create_cache("redis://127.0.0.1:6379/0"), RedisCache)


async def test_redis_subscription_survives_a_dropped_connection(redis_url: str) -> None:
    name = unique("tc_sub")
    cache = RedisCache(redis_url, key_prefix=name + ":", client_name=name)
    admin = aioredis.from_url(redis_url)
    try:
        async with cache.subscribe("ch") as messages:
            receiver = asyncio.create_task(anext(messages))
            subscribers = [c for c in await admin.client_list() if c.get("name") == name and c.get("sub") == "1"]
            assert len(subscribers) == 1
            await admin.client_kill_filter(_id=subscribers[0]["id"])
            # Pub/sub is fire-and-forget: messages sent while disconnected are lost, so keep publishing until
            # the re-subscribed connection receives one.
            for _ in range(100):
                await cache.publish("ch", "after-reconnect")
                done, _ = await asyncio.wait({receiver}, timeout=0.05)
                if done:
                    break
            assert receiver.done() and receiver.result() == ("ch", b"after-reconnect")
    finally:
        await admin.aclose()
        await cache.stop()
