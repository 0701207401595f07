"""Two processes' worth of AdminService on one data dir (as `serve --workers 2` runs them, on PostgreSQL and a
shared Redis): one history, written by one of them, in seq order without duplicates; a query on either sees the
lines both just logged; when the writer stops, the other takes over and the history goes on."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis

from tests.conftest import REDIS_URL
from typecase.server.admin.logstream import INFO, LogFilter
from typecase.server.admin.service import LOG_DIR

SHARED_REDIS = f"{REDIS_URL}/12"


@pytest.fixture
async def pair(app_factory, pg_database_url, tmp_path):
    redis.Redis.from_url(SHARED_REDIS).flushdb()
    common = dict(
        redis_url=SHARED_REDIS, database_url=pg_database_url, proxy_log_share_seconds=0.05, proxy_log_flush_seconds=0.05
    )
    (tmp_path / "two").mkdir(mode=0o700)
    (tmp_path / "one" / LOG_DIR).mkdir(mode=0o700, parents=True)
    (tmp_path / "two" / LOG_DIR).symlink_to(tmp_path / "one" / LOG_DIR)  # one history directory, as workers share
    first = await app_factory(data_dir=tmp_path / "one", **common)
    second = await app_factory(data_dir=tmp_path / "two", **common)
    yield first.servicers["AdminService"].logs, second.servicers["AdminService"].logs, tmp_path / "one" / LOG_DIR
    redis.Redis.from_url(SHARED_REDIS).flushdb()


def history_seqs(directory) -> list[int]:
    files = sorted(directory.glob("server.jsonl*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [orjson.loads(line)["seq"] for path in files for line in path.read_bytes().splitlines()]


async def publish_on_both(one, two, tag: str, n: int) -> None:
    for i in range(n):
        one.publish(INFO, "test", f"{tag}-one-{i}")
        two.publish(INFO, "test", f"{tag}-two-{i}")
        await asyncio.sleep(0.01)  # batches of both processes interleave in the cluster numbering


async def test_one_history_one_writer_in_order(pair):
    one, two, directory = pair
    for _ in range(100):  # each takes the writer's lock at its first flush; the first to try keeps it
        await asyncio.sleep(0.05)
        if one.history.leading or two.history.leading:
            break
    assert one.history.leading != two.history.leading
    await publish_on_both(one, two, "a", 30)
    await one.flush()  # both have published what they logged (each does every proxy_log_flush_seconds)
    await two.flush()
    for hub in (one, two):  # then either one's query waits for the writer and sees every line of both
        lines, more = await hub.query(LogFilter(query="a-"), 100)
        assert len(lines) == 60 and not more
        assert {line.message for line in lines} == {f"a-{p}-{i}" for p in ("one", "two") for i in range(30)}
    seqs = history_seqs(directory)
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)  # no duplicate, in seq order

    writer, other = (one, two) if one.history.leading else (two, one)
    await writer.stop()  # frees the writer's lock, as the kernel does when its process dies
    for i in range(20):
        other.publish(INFO, "test", f"b-{i}")
        await asyncio.sleep(0.01)
    lines, _ = await other.query(LogFilter(query="b-"), 100)
    assert len(lines) == 20 and other.history.leading  # it took the writing over
    seqs = history_seqs(directory)
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)


async def test_a_line_above_a_missing_seq_waits_for_it_then_for_a_bound(tmp_path, monkeypatch):
    from typecase.server.admin import loghistory
    from typecase.server.admin.logstream import LogFiles

    monkeypatch.setattr(loghistory, "GAP_WAIT_SECONDS", 0.3)
    directory = tmp_path / "logs"
    directory.mkdir(mode=0o700)
    writer = loghistory.HistoryWriter(LogFiles(directory, 1 << 20, 3))

    def lines(*seqs: int) -> list[str]:
        return [orjson.dumps({"seq": s, "message": f"line {s}"}).decode() for s in seqs]

    await writer.flush()  # takes the writer's lock
    writer.received(lines(1, 2, 4))  # 3: another process's batch, still on its way
    await writer.flush()
    assert history_seqs(directory) == [1, 2]
    writer.received(lines(3))
    await writer.flush()
    assert history_seqs(directory) == [1, 2, 3, 4]
    writer.received(lines(6))  # 5 never comes (its process died after reserving it)
    await writer.flush()
    assert history_seqs(directory) == [1, 2, 3, 4]
    await asyncio.sleep(0.35)
    await writer.flush()
    assert history_seqs(directory) == [1, 2, 3, 4, 6]
    writer.close()
