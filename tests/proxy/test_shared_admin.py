"""Two App processes' worth of AdminService on one PostgreSQL and one Redis (as `serve --workers 2` runs them):
GetStats and ListErrors on either show the requests of both, a stopped one drops out, and StreamLogs on one follows
the log lines of both in one sequence."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.proxy.conftest import ADMIN
from typecase.server.admin.logstream import INFO, LogFilter
from typecase.v1 import admin_pb2, admin_pb2_grpc

SHARED_REDIS = f"{REDIS_URL}/13"


@pytest.fixture
async def pair(app_factory, upstream, pg_database_url, tmp_path):
    redis.Redis.from_url(SHARED_REDIS).flushdb()
    common = dict(
        proxy_enabled=True,
        proxy_port=0,
        proxy_target_base_url=upstream.url,
        redis_url=SHARED_REDIS,
        database_url=pg_database_url,
        proxy_stats_share_seconds=0.1,
        proxy_log_share_seconds=0.05,
    )
    first = await app_factory(data_dir=tmp_path / "one", **common)
    second = await app_factory(data_dir=tmp_path / "two", **common)
    yield first, second
    redis.Redis.from_url(SHARED_REDIS).flushdb()


def proxy_url(app) -> str:
    return f"http://127.0.0.1:{app.servicers['AdminService'].proxy_port}"


async def proxied(app, n: int, model: str, **headers: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            await client.post(proxy_url(app) + "/v1/messages", json={"model": model}, headers=headers)


async def admin_of(app):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    return channel, admin_pb2_grpc.AdminServiceStub(channel)


async def stats_when(admin, predicate, timeout: float = 5.0) -> admin_pb2.GetStatsResponse:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        stats = await admin.GetStats(admin_pb2.GetStatsRequest(recent_limit=100), metadata=ADMIN)
        if predicate(stats) or asyncio.get_running_loop().time() > deadline:
            return stats
        await asyncio.sleep(0.05)


async def test_stats_and_errors_of_every_worker_on_either(pair):
    first, second = pair
    await proxied(first, 3, "model-one")
    await proxied(second, 2, "model-two", **{"x-fake-status": "500"})
    await proxied(second, 1, "model-one")
    one, a = await admin_of(first)
    two, b = await admin_of(second)
    async with one, two:
        for admin in (a, b):
            stats = await stats_when(admin, lambda s: s.total_requests >= 6)
            assert (stats.total_requests, stats.success_count, stats.failure_count) == (6, 4, 2)
            assert dict(stats.by_status) == {"200": 4, "500": 2}
            assert stats.by_model["model-one"].request_count == 4
            assert (stats.by_model["model-two"].request_count, stats.by_model["model-two"].failure_count) == (2, 2)
            # the recent requests of both, newest first across processes
            times = [r.time.ToNanoseconds() for r in stats.recent_requests]
            assert len(times) == 6 and times == sorted(times, reverse=True)
            assert stats.recent_requests[0].model == "model-one" and stats.p95_latency.ToNanoseconds() > 0
            windowed = await admin.GetStats(admin_pb2.GetStatsRequest(window={"seconds": 60}), metadata=ADMIN)
            assert windowed.total_requests == 6
            # errors of the other worker, paged by id across processes
            page = await admin.ListErrors(admin_pb2.ListErrorsRequest(page_size=1), metadata=ADMIN)
            assert page.total_size == 2 and page.errors[0].model == "model-two"
            rest = await admin.ListErrors(
                admin_pb2.ListErrorsRequest(page_size=1, page_token=page.next_page_token), metadata=ADMIN
            )
            assert len(rest.errors) == 1 and rest.errors[0].time.ToNanoseconds() < page.errors[0].time.ToNanoseconds()
            assert not rest.next_page_token
        # a stopped worker drops out at once (it deletes its snapshot); the other keeps counting its own
        await second.stop()
        stats = await a.GetStats(admin_pb2.GetStatsRequest(), metadata=ADMIN)
        assert stats.total_requests == 3


async def test_log_stream_follows_every_worker_in_one_sequence(pair):
    first, second = pair
    one, a = await admin_of(first)
    async with one:
        stream = a.StreamLogs(admin_pb2.StreamLogsRequest(query="/v1/messages"), metadata=ADMIN)
        await asyncio.sleep(0.3)  # the stream is subscribed
        await proxied(second, 1, "from-second", **{"x-trace-id": "trace-second"})
        await proxied(first, 1, "from-first")
        second.servicers["AdminService"].logs.publish(INFO, "test", "from-second: password=hunter2-secret /v1/messages")
        seen = [await asyncio.wait_for(stream.read(), 5) for _ in range(3)]
        stream.cancel()
    messages = [s.line.message for s in seen]
    assert any("from-second" in m for m in messages) and any("from-first" in m for m in messages)
    assert any(s.line.trace_id == "trace-second" for s in seen)
    seqs = [s.seq for s in seen]
    assert len(set(seqs)) == 3 and all(s > 0 for s in seqs)
    assert any("from-second: password=" in m for m in messages)
    assert all("hunter2-secret" not in m for m in messages)  # redacted before it is shared
    # each data dir's history holds the lines of every process, with the shared numbers (loghistory.py)
    hub_two = second.servicers["AdminService"].logs
    await hub_two.flush()
    lines, _ = await hub_two.query(LogFilter(query="from-second"), 10)
    assert {line.seq for line in lines} <= set(seqs) and len(lines) == 2


async def test_without_redis_each_process_keeps_its_own(app_factory, upstream, tmp_path):
    app = await app_factory(proxy_enabled=True, proxy_port=0, proxy_target_base_url=upstream.url)
    service = app.servicers["AdminService"]
    assert service.shared_stats is None and service.logs.shipper is None


async def test_with_redis_gone_each_process_shows_its_own_and_numbers_its_lines(
    app_factory, upstream, pg_database_url, tmp_path
):
    """(The API itself answers UNAVAILABLE while Redis is away; these are what the admin parts fall back to.)"""
    from tests.cluster.rig import RedisServer

    server = RedisServer(tmp_path).start()
    try:
        common = dict(
            proxy_enabled=True,
            proxy_port=0,
            proxy_target_base_url=upstream.url,
            redis_url=server.url,
            database_url=pg_database_url,
            proxy_stats_share_seconds=0.1,
            proxy_log_share_seconds=0.05,
        )
        first = await app_factory(data_dir=tmp_path / "one", **common)
        second = await app_factory(data_dir=tmp_path / "two", **common)
        await proxied(first, 2, "model-one")
        await proxied(second, 1, "model-two")
        service = first.servicers["AdminService"]
        await asyncio.sleep(0.3)
        assert (await service.shared_stats.view()).totals.requests == 3
        subscriber = service.logs.subscribe(LogFilter(query="after-redis"))
        server.stop()
        view = await asyncio.wait_for(service.shared_stats.view(), 15)
        assert view.totals.requests == 2 and len(view.recent) == 2  # its own, not an error
        service.logs.publish(INFO, "test", "after-redis line")
        await asyncio.wait_for(service.logs.flush(), 15)
        line, dropped = await asyncio.wait_for(subscriber.get(), 5)  # numbered here while the cache is away
        assert line.message == "after-redis line" and line.seq > 0 and dropped == 0
    finally:
        server.stop()
