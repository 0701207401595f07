"""The job engine (server/infra/queue.py) on a real SQLite store with taskiq's in-process broker: retries with
backoff, permanent failures, attempt limits, superseding a running job, and graceful release on stop."""

from __future__ import annotations

import asyncio

import pytest

from typecase.server.infra.queue import DONE, FAILED, QUEUED, JobQueue, PermanentJobError
from typecase.server.infra.schema import migrate
from typecase.server.infra.sql import Database


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    await database.start()
    await migrate(database)
    yield database
    await database.stop()


def make_queue(db, **kw) -> JobQueue:
    options = dict(
        lease_seconds=1.0,
        max_attempts=3,
        retry_backoff_seconds=0.05,
        poll_seconds=0.05,
        concurrency=2,
        shutdown_grace_seconds=0.2,
    )
    options.update(kw)
    return JobQueue(db, **options)


async def until(predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def finished(queue: JobQueue, key: str):
    async def check():
        row = await queue.get(key)
        return row if row is not None and row.state in (DONE, FAILED) else None

    return await until(check)


async def test_transient_failures_are_retried_then_succeed(db):
    queue = make_queue(db)
    calls, retries = [], []

    async def handler(job):
        calls.append(job.attempt)
        await job.progress("working", 50)
        if job.attempt == 1:
            raise RuntimeError("upstream hiccup")

    async def on_retry(job, error):
        retries.append(error["message"])

    queue.register("t", handler, on_retry=on_retry)
    await queue.start(worker=True)
    try:
        await queue.enqueue("t", "k1", {"n": 1})
        row = await finished(queue, "k1")
        assert row.state == DONE and row.attempts == 2 and calls == [1, 2]
        assert retries == ["RuntimeError: upstream hiccup"] and row.progress == 100 and row.error is None
    finally:
        await queue.stop()


async def test_permanent_errors_and_exhausted_attempts_fail_once(db):
    queue = make_queue(db, max_attempts=2)
    failed = []

    async def handler(job):
        if job.payload["kind"] == "bad input":
            raise PermanentJobError("PARSE_FAILED", "cannot parse", {"page": "3"})
        raise RuntimeError("always broken")

    async def on_failed(job, error):
        failed.append((job.key, error["reason"]))

    queue.register("t", handler, on_failed=on_failed)
    await queue.start(worker=True)
    try:
        await queue.enqueue("t", "bad", {"kind": "bad input"})
        await queue.enqueue("t", "flaky", {"kind": "flaky"})
        bad, flaky = await finished(queue, "bad"), await finished(queue, "flaky")
        assert bad.state == FAILED and bad.attempts == 1 and bad.error["metadata"] == {"page": "3"}
        assert flaky.state == FAILED and flaky.attempts == 2 and "always broken" in flaky.error["message"]
        assert sorted(failed) == [("bad", "PARSE_FAILED"), ("flaky", "INTERNAL")]
    finally:
        await queue.stop()


async def test_re_enqueue_supersedes_a_running_job(db):
    queue = make_queue(db)
    started, seen = asyncio.Event(), []
    cancelled = []

    async def handler(job):
        seen.append(job.payload["v"])
        if job.payload["v"] == 1:
            started.set()
            try:
                while True:
                    await asyncio.sleep(0.05)
                    await job.progress("working", 10)
            except asyncio.CancelledError:
                cancelled.append(job.generation)
                raise

    queue.register("t", handler)
    await queue.start(worker=True)
    try:
        await queue.enqueue("t", "same", {"v": 1})
        await asyncio.wait_for(started.wait(), 5)
        await queue.enqueue("t", "same", {"v": 2})
        row = await finished(queue, "same")
        assert row.state == DONE and row.generation == 2 and row.payload == {"v": 2}
        assert seen == [1, 2]
    finally:
        await queue.stop()


async def test_stop_releases_running_jobs_to_the_next_worker(db):
    first = make_queue(db)
    running = asyncio.Event()

    async def hang(job):
        running.set()
        await asyncio.sleep(3600)

    first.register("t", hang)
    await first.start(worker=True)
    await first.enqueue("t", "long", {})
    await asyncio.wait_for(running.wait(), 5)
    await first.stop()
    row = await first.get("long")
    assert row.state == QUEUED and row.attempts == 0 and row.lease_owner is None  # released, not counted

    second = make_queue(db)
    done = []

    async def quick(job):
        done.append(job.attempt)

    second.register("t", quick)
    await second.start(worker=True)  # its sweeper finds the released job in SQL
    try:
        row = await finished(second, "long")
        assert row.state == DONE and done == [1]
    finally:
        await second.stop()
