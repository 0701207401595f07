"""The in-process cache's streams kept in a SQLite file (infra/journal.py): what a restarted process finds."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from typecase.server.infra.journal import JournaledMemoryCache, decode_fields, encode_fields


async def restarted(path, before: JournaledMemoryCache | None = None) -> JournaledMemoryCache:
    if before is not None:
        await before.stop()
    cache = JournaledMemoryCache(path)
    await cache.start()
    return cache


async def test_streams_come_back_whole_after_a_restart_and_values_do_not(tmp_path):
    path = tmp_path / "streams.db"
    cache = await restarted(path)
    await cache.xadd_many(
        [
            ("log:a", {"s": "1", "m": b"\x00first"}, 60),
            ("log:b", {"s": "1", "m": "b1"}, None),
            ("log:a", {"s": "2", "m": b"second", "t": "1"}, None),
        ]
    )
    await cache.xadd("log:b", {"s": "2", "m": "b2"})
    await cache.set("stop:a", "1", ttl=60)
    cache = await restarted(path, cache)
    assert [f for _, f in await cache.xrange("log:a")] == [
        {"s": b"1", "m": b"\x00first"},
        {"s": b"2", "m": b"second", "t": b"1"},
    ]
    assert [f["m"] for _, f in await cache.xrange("log:b")] == [b"b1", b"b2"]
    assert await cache.get("stop:a") is None  # a dead process's signals and locks stay dead
    # ids keep increasing after the reload, so readers may go on with xread
    last = (await cache.xrange("log:b"))[-1][0]
    await cache.xadd("log:b", {"s": "3", "m": "b3"})
    assert [f["m"] for _, f in await cache.xread("log:b", after_id=last)] == [b"b3"]
    await cache.stop()


async def test_ttls_run_on_across_restarts_and_expired_streams_are_purged(tmp_path):
    path = tmp_path / "streams.db"
    cache = await restarted(path)
    await cache.xadd_many([("short", {"s": "1"}, 0.3), ("long", {"s": "1"}, 60)])
    await cache.xadd("later", {"s": "1"})
    assert await cache.expire("later", 0.3)
    cache = await restarted(path, cache)
    assert await cache.xrange("short") and await cache.xrange("later")
    await asyncio.sleep(0.4)
    assert await cache.xrange("short") == [] and await cache.xrange("later") == []
    cache = await restarted(path, cache)
    assert await cache.xrange("long") and await cache.xrange("short") == []
    await cache.stop()
    with sqlite3.connect(path) as db:
        kept = db.execute("SELECT DISTINCT s.key FROM entries e JOIN streams s ON s.id = e.stream").fetchall()
        assert kept == [("long",)]
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (1,)


async def test_a_stream_made_again_after_expiring_does_not_inherit_the_old_entries(tmp_path):
    path = tmp_path / "streams.db"
    cache = await restarted(path)
    await cache.xadd_many([("log", {"s": "1", "m": "old"}, 0.2)])
    await asyncio.sleep(0.3)
    await cache.xadd_many([("log", {"s": "1", "m": "new"}, None)])
    cache = await restarted(path, cache)
    assert [f["m"] for _, f in await cache.xrange("log")] == [b"new"]
    assert await cache.delete_stream("log")
    cache = await restarted(path, cache)
    assert await cache.xrange("log") == []
    await cache.stop()


def test_fields_round_trip_through_the_file_encoding():
    for fields in ({}, {"s": b"1"}, {"m": bytes(range(256)) * 300, "t": b"1", "é": b""}):
        assert decode_fields(encode_fields(fields)) == fields


async def test_an_unreadable_file_is_a_clear_start_error(tmp_path):
    path = tmp_path / "streams.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RuntimeError, match="TYPECASE_EMBEDDED_EVENT_LOGS_DURABLE=false") as failure:
        await JournaledMemoryCache(path).start()
    assert str(path) in str(failure.value)
