"""Contract tests for the leased-task engine (infra/leased_tasks.py), on the embedded implementation (SQLite, the
in-process cache/bus with its stream journal) and on Redis + PostgreSQL.

Two engines on one database and one cache (or two Redis clients) play two replicas. The domain here is a toy
"job": a task that emits the events the test feeds it, ends when told, and is continued by the replica that picks
up its lapsed lease (which logs a `continued` event after what the dead replica logged, then ends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Integer, String, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from typecase.server.infra.cache import Cache, RedisCache
from typecase.server.infra.eventlog import Entry, LiveLog
from typecase.server.infra.journal import JournaledMemoryCache
from typecase.server.infra.leased_tasks import CLOSED, RUNNING, LeasedTasks, LeaseSettings
from typecase.server.infra.sql import Database, UTCDateTime, utcnow

from .infra_support import unique

LEASE = 1.5  # generous: both replicas share one event loop on a loaded machine


class _Base(DeclarativeBase):
    pass


class JobRow(_Base):
    __tablename__ = "lease_contract_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    replica: Mapped[str] = mapped_column(String(128), default="")
    lease_expire_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


def entry(seq: int, text: str, terminal: bool = False) -> Entry:
    return Entry(seq, text.encode(), terminal, text)


def texts(entries: list[Entry]) -> list[str]:
    return [e.payload.decode() for e in entries]


@dataclass(eq=False)
class Job:
    id: str
    outbox: LiveLog
    live: LiveLog
    seq: int
    feed: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    writer: asyncio.Task | None = None
    finishing: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    abandoned: bool = False

    def emit(self, text: str, terminal: bool = False) -> None:
        self.seq += 1
        self.outbox.append(entry(self.seq, text, terminal))


class Jobs:
    """A toy domain: the LeaseHolder the engine is driven by."""

    def __init__(self, db: Database, cache: Cache, name: str):
        self.db = db
        self.name = name
        self.leases: LeasedTasks[Job] = LeasedTasks(
            db,
            cache,
            name=name,
            prefix="test:job",
            model=JobRow,
            settings=LeaseSettings(
                lease_seconds=LEASE,
                heartbeat_seconds=LEASE / 4,
                sweep_seconds=LEASE / 4,
                sweep_batch=50,
                timeout_seconds=30,
                log_ttl_seconds=60,
                follow_poll_seconds=0.05,
            ),
            holder=self,
            replica=f"replica-{name}",
            on_renew=self.renewed,
        )
        self.renewals = 0

    # -- the domain's own operations
    async def begin(self, job_id: str) -> Job:
        async with self.db.session() as session:
            session.add(
                JobRow(
                    id=job_id, status=RUNNING, replica=self.leases.replica, lease_expire_time=self.leases.lease_end()
                )
            )
        job = Job(job_id, LiveLog(1), LiveLog(1), 0)
        return self.leases.launch(job_id, job, self._run(job), f"job-{job_id}")

    async def _run(self, job: Job) -> None:
        status = "done"
        try:
            while (text := await job.feed.get()) is not None:
                job.emit(text)
        except asyncio.CancelledError:
            status = "stopped"
        job.finishing = True
        try:
            if job.abandoned:
                job.outbox.append(CLOSED)
                return
            async with self.db.session() as session:
                await session.execute(
                    update(JobRow)
                    .where(JobRow.id == job.id, JobRow.replica == self.leases.replica)
                    .values(status=status, lease_expire_time=None, last_seq=job.seq + 1)
                )
            job.emit(status, terminal=True)
        finally:
            self.leases.local.pop(job.id, None)
            job.ended.set()

    async def reap(self, job_id: str) -> None:
        now = utcnow()
        async with self.db.session() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == RUNNING, JobRow.lease_expire_time < now)
                .values(status="reaped", lease_expire_time=None)
            )

    # -- LeaseHolder
    def stop_local(self, job: Job) -> bool:
        if job.finishing:
            return False
        job.stopped = True
        job.task.cancel()
        return True

    def abandon(self, job: Job) -> None:
        job.abandoned = True
        job.task.cancel()

    async def pick_up(self, job_id: str) -> bool:
        """Take over: claim the row, then log `continued` after what is logged, and end."""
        now = utcnow()
        async with self.db.session() as session:
            claimed = await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == RUNNING, JobRow.lease_expire_time < now)
                .values(replica=self.leases.replica, lease_expire_time=self.leases.lease_end())
            )
            if claimed.rowcount != 1:
                return False
        last = max((e.seq for e in await self.leases.log.entries(job_id)), default=0)
        job = Job(job_id, LiveLog(last + 1), LiveLog(last + 1), last)
        job.feed.put_nowait(f"continued by {self.name}")
        job.feed.put_nowait(None)
        self.leases.launch(job_id, job, self._run(job), f"job-{job_id}")
        return True

    async def renewed(self, session, jobs: list[Job]) -> None:
        self.renewals += 1

    # -- reading
    async def on_idle(self, row: JobRow, last_seq: int) -> Entry | None:
        current = await self.leases.get_row(row.id)
        if current.status == RUNNING:
            return None
        if last_seq < current.last_seq - 1:
            return None  # ended, but its last events are still on their way to the log (chat waits a grace too)
        return entry(max(last_seq, current.last_seq), current.status, terminal=True)

    async def stored_replay(self, row: JobRow, after_seq: int) -> list[Entry]:
        return [entry(row.last_seq, f"stored {row.status}", terminal=True)]

    def follow(self, row: JobRow, after_seq: int = 0) -> AsyncIterator[Entry]:
        return self.leases.follow(row, after_seq, on_idle=self.on_idle, stored_replay=self.stored_replay)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def collect(stream: AsyncIterator[Entry], timeout: float = 10) -> list[Entry]:
    async def run() -> list[Entry]:
        return [e async for e in stream]

    return await asyncio.wait_for(run(), timeout)


# ------------------------------------------------------------------------------------------ fixtures


@dataclass
class Cluster:
    db: Database
    caches: list[Cache]
    apps: list[Jobs] = field(default_factory=list)

    async def replica(self, name: str, *, start: bool = True) -> Jobs:
        cache = self.caches[min(len(self.apps), len(self.caches) - 1)]
        jobs = Jobs(self.db, cache, name)
        if start:
            await jobs.leases.start()
        self.apps.append(jobs)
        return jobs


@pytest.fixture(params=["embedded", "redis"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    prefix = unique("typecase_test") + ":"
    if request.param == "embedded":
        db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
        shared = JournaledMemoryCache(tmp_path / "streams.db")
        caches: list[Cache] = [shared]
    else:
        url = request.getfixturevalue("redis_url")
        db = Database(request.getfixturevalue("pg_url"))
        caches = [RedisCache(url, key_prefix=prefix), RedisCache(url, key_prefix=prefix)]
    await db.start()
    async with db.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.drop_all)
        await conn.run_sync(_Base.metadata.create_all)
    for cache in caches:
        await cache.start()
    state = Cluster(db, caches)
    try:
        yield state
    finally:
        for jobs in state.apps:
            for job in list(jobs.leases.local.values()):
                job.task.cancel()
            await jobs.leases.settle(list(jobs.leases.local.values()))
            await jobs.leases.close()
        for cache in caches:
            await cache.stop()
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
        await db.stop()
        if request.param == "redis":
            raw = aioredis.from_url(request.getfixturevalue("redis_url"))
            try:
                keys = [k async for k in raw.scan_iter(match=prefix + "*")]
                if keys:
                    await raw.delete(*keys)
            finally:
                await raw.aclose()


def crash(jobs: Jobs) -> asyncio.Future:
    """Stop a replica the way a SIGKILL would: no more heartbeats, its tasks gone without writing anything."""
    for job in jobs.leases.local.values():
        job.abandoned = True  # (the toy's "write nothing" path)
        job.task.cancel()
    return asyncio.ensure_future(jobs.leases.close())


# ------------------------------------------------------------------------------------------ the contract


async def test_a_renewed_lease_is_kept_and_a_lapsed_one_is_taken_over_after_expiry(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    b = await cluster.replica("b")
    job = await a.begin("j1")
    job.feed.put_nowait("one")
    job.feed.put_nowait("two")
    await eventually(lambda: _logged(a, "j1", 2), what="two events logged")

    await asyncio.sleep(LEASE * 2)  # a renews: b's sweeps leave it alone
    row = await b.leases.get_row("j1")
    assert row.replica == "replica-a" and row.status == RUNNING and row.lease_expire_time > utcnow()
    assert a.renewals > 0

    await crash(a)
    await eventually(lambda: _replica_is(b, "j1", "replica-b"), what="b to take the job over")
    seen = await collect(b.follow(await b.leases.get_row("j1")))
    assert texts(seen) == ["one", "two", "continued by b", "done"]
    assert [e.seq for e in seen] == [1, 2, 3, 4]
    assert (await b.leases.get_row("j1")).status == "done"


async def test_a_stop_asked_on_another_replica_reaches_the_one_running_the_task(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    b = await cluster.replica("b")
    job = await a.begin("j2")
    job.feed.put_nowait("working")
    await eventually(lambda: _logged(a, "j2", 1), what="the first event")

    await b.leases.stop_elsewhere("j2")
    assert await b.leases.wait_ended("j2", 5, b.reap)
    assert job.stopped and (await b.leases.get_row("j2")).status == "stopped"
    assert texts(await b.leases.log.entries("j2")) == ["working", "stopped"]


async def test_a_stop_whose_publish_was_missed_is_found_by_the_heartbeat(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    job = await a.begin("j3")
    await a.leases.cache.set(a.leases.stop_key("j3"), "1", ttl=30)  # the key, without the bus message
    await asyncio.wait_for(job.ended.wait(), LEASE * 4)
    assert job.stopped and (await a.leases.get_row("j3")).status == "stopped"


async def test_follow_replays_the_shared_log_then_goes_live(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    b = await cluster.replica("b")
    job = await a.begin("j4")
    for text in ("one", "two", "three"):
        job.feed.put_nowait(text)
    await eventually(lambda: _logged(a, "j4", 3), what="three events")

    remote = asyncio.ensure_future(collect(b.follow(await b.leases.get_row("j4"), after_seq=1)))
    local = asyncio.ensure_future(collect(a.follow(await a.leases.get_row("j4"), after_seq=2)))
    await asyncio.sleep(0.2)
    assert not remote.done() and not local.done()  # replayed, now following
    job.feed.put_nowait("four")
    job.feed.put_nowait(None)
    assert texts(await remote) == ["two", "three", "four", "done"]
    assert texts(await local) == ["three", "four", "done"]


async def test_a_task_ended_whose_log_is_gone_is_replayed_from_its_row(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    job = await a.begin("j5")
    job.feed.put_nowait(None)
    await asyncio.wait_for(job.ended.wait(), 5)
    await job.writer
    await a.leases.cache.delete(a.leases.stream_key("j5"))
    replay = await collect(a.follow(await a.leases.get_row("j5")))
    assert texts(replay) == ["stored done"] and replay[0].seq == 1 and replay[0].terminal


async def test_no_event_is_delivered_before_it_is_in_the_shared_log(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    cache = a.leases.cache
    gate = asyncio.Event()
    real = cache.xadd_events

    async def held(items):
        await gate.wait()
        return await real(items)

    cache.xadd_events = held  # the shared log is slow to answer
    try:
        job = await a.begin("j6")
        reader = asyncio.ensure_future(collect(a.follow(await a.leases.get_row("j6"))))
        job.feed.put_nowait("one")
        job.feed.put_nowait(None)
        await asyncio.sleep(0.3)
        assert job.outbox.entries and not job.live.entries  # emitted, not yet delivered to anyone
        assert not reader.done()
        gate.set()
        got = await reader
        assert texts(got) == ["one", "done"]
        assert texts(await a.leases.log.entries("j6")) == ["one", "done"]
    finally:
        del cache.xadd_events


async def test_wait_ended_waits_for_a_local_task_and_reaps_a_lapsed_one(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    job = await a.begin("j7")
    assert not await a.leases.wait_ended("j7", 0.2, a.reap)  # still running
    job.feed.put_nowait(None)
    assert await a.leases.wait_ended("j7", 5, a.reap)

    dead = await cluster.replica("dead")
    await dead.begin("j8")
    await crash(dead)
    b = await cluster.replica("b", start=False)  # no sweep: only the waiter notices the lapse
    assert await b.leases.wait_ended("j8", LEASE * 5, b.reap)
    assert (await b.leases.get_row("j8")).status == "reaped"


async def test_a_replica_that_lost_its_lease_abandons_the_task(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    job = await a.begin("j9")
    async with cluster.db.session() as session:  # another replica claimed it while a missed its lease
        await session.execute(update(JobRow).where(JobRow.id == "j9").values(replica="replica-other"))
    await asyncio.wait_for(job.ended.wait(), LEASE * 4)
    assert job.abandoned and not job.stopped
    row = await a.leases.get_row("j9")
    assert row.status == RUNNING and row.replica == "replica-other"  # a wrote nothing


async def test_a_task_registered_before_its_row_commits_is_not_abandoned_by_a_renewal(cluster: Cluster) -> None:
    """Chat registers a turn before its start transaction commits (so that a stop finds it); a heartbeat inside
    that window once abandoned the turn as "ended elsewhere", which ended its stream at once (CI, under load)."""
    a = await cluster.replica("a")
    job = Job("j10", LiveLog(1), LiveLog(1), 0)
    a.leases.launch("j10", job, a._run(job), "job-j10")  # no row yet: its insert has not committed
    await a.leases.renew()
    assert not job.abandoned and "j10" in a.leases.local
    async with cluster.db.session() as session:  # the insert commits
        session.add(JobRow(id="j10", status=RUNNING, replica=a.leases.replica, lease_expire_time=a.leases.lease_end()))
    await a.leases.renew()
    assert not job.abandoned
    job.feed.put_nowait(None)
    await asyncio.wait_for(job.ended.wait(), 10)
    await eventually(lambda: _logged(a, "j10", 1), what="the end in the shared log")  # written after the row
    assert texts(await collect(a.follow(await a.leases.get_row("j10")))) == ["done"]
    assert (await a.leases.get_row("j10")).status == "done"


async def _logged(jobs: Jobs, job_id: str, count: int) -> bool:
    return len(await jobs.leases.log.entries(job_id)) >= count


async def _replica_is(jobs: Jobs, job_id: str, replica: str) -> bool:
    row = await jobs.leases.get_row(job_id)
    return row.replica == replica
