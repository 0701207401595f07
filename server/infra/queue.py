"""Background jobs: durable job state and leases in SQL, delivery by taskiq.

A job is one SQL row (kind, key, payload, state, stage, progress, attempts, lease). The row is the truth; taskiq
only carries "job <id> may be ready" deliveries to workers:

- with a Redis URL, over a Redis stream (taskiq-redis RedisStreamBroker, consumer group, ack after execution), so
  `typecase serve` enqueues and any number of `typecase worker` processes on other machines run the jobs;
- without one, through taskiq's in-process broker; processes sharing the SQL store (the embedded SQLite file)
  find each other's jobs through the sweeper, which polls SQL.

Semantics: at-least-once. A worker claims a job with one conditional UPDATE (queued, or running with an expired
lease), renews its lease while the handler runs, and loses the job when the lease is taken over or the job is
re-enqueued (a new generation). Handlers must therefore be idempotent (deterministic ids, upserts,
delete-then-insert). A worker killed mid-job leaves a running row whose lease expires; the sweeper of any live
worker re-delivers it and the next claim counts one more attempt. Graceful stops release running jobs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from .sql import Base, Database, JSONType, affected, id_column, utcnow

log = logging.getLogger("typecase.jobs")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
TASK_NAME = "typecase.jobs.deliver"

JOBS_TOTAL = Counter("typecase_jobs_total", "Jobs finished by a worker", ["kind", "outcome"])
JOB_SECONDS = Histogram(
    "typecase_job_seconds",
    "Time a worker spent on one job attempt",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOBS_RUNNING = Gauge("typecase_jobs_running", "Jobs running in this process", ["kind"])


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = id_column()
    kind: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)  # at most one job per subject (e.g. a file)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(String(32), default="")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expire_time: Mapped[datetime | None] = mapped_column()
    available_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kick_time: Mapped[datetime | None] = mapped_column()
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finish_time: Mapped[datetime | None] = mapped_column()


class PermanentJobError(Exception):
    """A failure retrying cannot fix (bad input): the job fails at once with this reason."""

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})


class JobLost(Exception):
    """This worker no longer owns the job (re-enqueued, deleted, or its lease was taken over)."""


@dataclass
class Job:
    """What a handler sees of its job; `progress()` also renews the lease and raises JobLost when it is gone."""

    id: str
    kind: str
    key: str
    payload: dict[str, Any]
    generation: int
    attempt: int
    max_attempts: int
    _queue: JobQueue = field(repr=False)
    _owner: str = field(repr=False)
    lost: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def progress(self, stage: str, percent: int) -> None:
        if self.lost.is_set() or not await self._queue._renew(self, stage=stage, progress=percent):
            self.lost.set()
            raise JobLost(self.id)

    def check(self) -> None:
        if self.lost.is_set():
            raise JobLost(self.id)


Handler = Callable[[Job], Coroutine[Any, Any, None]]
FailureHook = Callable[[Job, dict[str, Any]], Coroutine[Any, Any, None]]


@dataclass
class _Kind:
    handler: Handler
    on_failed: FailureHook | None
    on_retry: FailureHook | None


class JobQueue:
    """Enqueue jobs anywhere; run them in processes that called start_worker()."""

    def __init__(
        self,
        db: Database,
        *,
        redis_url: str | None = None,
        stream: str = "typecase:jobs",
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        retry_backoff_seconds: float = 5.0,
        poll_seconds: float = 1.0,
        rekick_seconds: float = 300.0,
        concurrency: int = 2,
        shutdown_grace_seconds: float = 10.0,
    ):
        self.db = db
        self.redis_url = redis_url
        self.stream = stream
        self.lease = lease_seconds
        self.max_attempts = max_attempts
        self.backoff = retry_backoff_seconds
        self.poll = poll_seconds
        self.rekick = rekick_seconds
        self.concurrency = concurrency
        self.grace = shutdown_grace_seconds
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._kinds: dict[str, _Kind] = {}
        self._broker: Any = None
        self._task: Any = None
        self._worker = False
        self._finish = asyncio.Event()
        self._background: list[asyncio.Task] = []
        self._running: dict[str, asyncio.Task] = {}  # job id -> handler task, in this process
        self._pending: set[str] = set()  # delivered in-process and not finished (in-memory broker)
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)  # the in-process broker runs every delivery at once

    @property
    def distributed(self) -> bool:
        return self.redis_url is not None

    def register(
        self, kind: str, handler: Handler, *, on_failed: FailureHook | None = None, on_retry: FailureHook | None = None
    ) -> None:
        """`handler(job)` runs a job; `on_failed(job, error)` runs once when it fails for good, `on_retry` when
        an attempt failed and another is scheduled."""
        self._kinds[kind] = _Kind(handler, on_failed, on_retry)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self, *, worker: bool) -> None:
        """Connect the broker (to enqueue); with worker=True also consume deliveries and run the sweeper."""
        self._worker = worker
        if self.distributed:
            from taskiq_redis import RedisStreamBroker

            assert self.redis_url is not None  # distributed means a Redis URL
            self._broker = RedisStreamBroker(
                self.redis_url,
                queue_name=self.stream,
                consumer_group_name=f"{self.stream}:workers",
                consumer_name=self.node,
                consumer_id="0",
                xread_block=int(min(self.poll, 2.0) * 1000),
                idle_timeout=int(self.lease * 1000),
                unacknowledged_lock_timeout=max(self.lease, 5.0),
                maxlen=100_000,
                xread_count=self.concurrency,
            )
        else:
            from taskiq import InMemoryBroker

            self._broker = InMemoryBroker(max_async_tasks=self.concurrency, propagate_exceptions=False)

        async def deliver(job_id: str) -> None:  # taskiq renames and re-exports task functions: no bound methods
            await self._deliver(job_id)

        self._task = self._broker.register_task(deliver, task_name=TASK_NAME)
        await self._broker.startup()
        if worker:
            self._finish.clear()
            if self.distributed:
                self._background.append(asyncio.create_task(self._listen(), name="jobs-listen"))
            self._background.append(asyncio.create_task(self._sweep_loop(), name="jobs-sweeper"))
            log.info(
                "job worker %s started (%s, concurrency %d)",
                self.node,
                "redis stream" if self.distributed else "in-process",
                self.concurrency,
            )

    async def stop(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period, then release them to other workers."""
        self._finish.set()
        if self._running:
            log.info("waiting up to %gs for %d running jobs", self.grace, len(self._running))
            await asyncio.wait(list(self._running.values()), timeout=self.grace or None)
        for task in list(self._running.values()):
            task.cancel()  # _deliver releases the lease on cancellation
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=5)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        if self._broker is not None:
            if not self.distributed:
                for task in list(self._broker._running_tasks):
                    task.cancel()
            with contextlib.suppress(Exception):
                await self._broker.shutdown()
            self._broker = None

    # -- producer ------------------------------------------------------------------------------------------------
    async def enqueue(self, kind: str, key: str, payload: dict[str, Any], *, session=None) -> str:
        """Queue a job for `key`, replacing (and superseding, if running) any earlier job for the same key.

        Pass `session` to write the job in the caller's transaction; then call `kick(job_id)` after it commits.
        Without one the job is committed and delivered here.
        """
        if kind not in self._kinds:
            raise ValueError(f"unknown job kind {kind!r}")
        if session is not None:
            return await self._upsert(session, kind, key, payload)
        async with self.db.session() as own:
            job_id = await self._upsert(own, kind, key, payload)
        await self.kick(job_id)
        return job_id

    async def _upsert(self, session, kind: str, key: str, payload: dict[str, Any]) -> str:
        now = utcnow()
        # No FOR UPDATE while the key may not exist: InnoDB would take a gap lock, and two inserts in the same gap
        # deadlock. A new key is inserted (its unique index settles races); an existing row is locked, then updated.
        row = await session.scalar(select(JobRow.id).where(JobRow.key == key))
        if row is not None:
            row = await session.scalar(select(JobRow).where(JobRow.key == key).with_for_update())
        if row is None:
            row = JobRow(
                kind=kind,
                key=key,
                payload=payload,
                state=QUEUED,
                max_attempts=self.max_attempts,
                available_time=now,
                generation=1,
                attempts=0,
                progress=0,
                stage="",
            )
            session.add(row)
            await session.flush()
            return row.id
        # A running worker keeps its lease until its next renewal notices the new generation and lets go.
        row.kind, row.payload, row.state, row.stage, row.progress = kind, payload, QUEUED, "", 0
        row.generation += 1
        row.attempts, row.max_attempts, row.error, row.finish_time = 0, self.max_attempts, None, None
        row.available_time, row.kick_time = now, None
        return row.id

    async def kick(self, job_id: str) -> None:
        """Deliver a committed job to a worker (best effort: the sweeper re-delivers anything missed)."""
        if self._broker is None:
            return
        if not self.distributed and not self._worker:
            return  # another process's sweeper will find it in SQL
        if not self.distributed:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        try:
            await self._task.kiq(job_id)
            async with self.db.session() as session:
                await session.execute(update(JobRow).where(JobRow.id == job_id).values(kick_time=utcnow()))
        except Exception:
            self._pending.discard(job_id)
            log.warning("could not deliver job %s now; the sweeper will retry", job_id, exc_info=True)

    async def delete(self, key: str) -> None:
        """Forget the job of `key`; a worker running it loses it at its next lease renewal."""
        async with self.db.session() as session:
            await session.execute(delete(JobRow).where(JobRow.key == key))

    async def delete_prefix(self, key_prefix: str) -> None:
        async with self.db.session() as session:
            await session.execute(delete(JobRow).where(JobRow.key.startswith(key_prefix, autoescape=True)))

    async def get(self, key: str) -> JobRow | None:
        async with self.db.session() as session:
            return await session.scalar(select(JobRow).where(JobRow.key == key))

    # -- worker --------------------------------------------------------------------------------------------------
    async def _listen(self) -> None:
        from taskiq.acks import AcknowledgeType
        from taskiq.receiver import Receiver

        while not self._finish.is_set():
            try:
                receiver = Receiver(
                    self._broker,
                    run_startup=False,
                    max_async_tasks=self.concurrency,
                    max_prefetch=0,
                    ack_type=AcknowledgeType.WHEN_EXECUTED,
                    propagate_exceptions=False,
                    wait_tasks_timeout=self.grace,
                )
                await receiver.listen(self._finish)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job delivery listener failed; reconnecting", exc_info=True)
                await asyncio.sleep(min(self.poll, 2.0))

    async def _sweep_loop(self) -> None:
        while not self._finish.is_set():
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job sweep failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()

    async def sweep(self) -> int:
        """Deliver due jobs: never delivered, retry time reached, abandoned by a dead worker, or lost in transit."""
        now = utcnow()
        stale = now - timedelta(seconds=self.rekick)
        from sqlalchemy import and_, or_

        due = or_(
            and_(JobRow.state == QUEUED, JobRow.available_time <= now),
            and_(JobRow.state == RUNNING, JobRow.lease_expire_time < now),
        )
        if self.distributed:  # the stream keeps deliveries; only re-send what nobody took for a long time
            due = and_(due, or_(JobRow.kick_time.is_(None), JobRow.kick_time < stale, JobRow.state == RUNNING))
        stmt = select(JobRow.id).where(due).order_by(JobRow.available_time).limit(max(50, self.concurrency * 4))
        async with self.db.session() as session:
            ids = [i for i in (await session.scalars(stmt)).all() if i not in self._running and i not in self._pending]
        for job_id in ids:
            await self.kick(job_id)
        return len(ids)

    async def _deliver(self, job_id: str) -> None:
        """One delivery: claim the job and run it, or do nothing when it is not ours to run."""
        try:
            async with self._slots:
                if self._finish.is_set():
                    return
                job = await self._claim(job_id)
                if job is None:
                    return
                self._running[job_id] = asyncio.current_task()  # type: ignore[assignment]  # always in a task
                try:
                    await self._run(job)
                finally:
                    self._running.pop(job_id, None)
        finally:
            self._pending.discard(job_id)

    async def _claim(self, job_id: str) -> Job | None:
        now = utcnow()
        owner = f"{self.node}:{uuid.uuid4().hex[:8]}"
        from sqlalchemy import or_

        async with self.db.session() as session:
            result = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.state.in_((QUEUED, RUNNING)),
                    JobRow.available_time <= now,
                    or_(JobRow.lease_expire_time.is_(None), JobRow.lease_expire_time < now),
                )
                .values(
                    state=RUNNING,
                    lease_owner=owner,
                    lease_expire_time=now + timedelta(seconds=self.lease),
                    attempts=JobRow.attempts + 1,
                    update_time=now,
                )
                .execution_options(synchronize_session=False)
            )
            if affected(result) != 1:
                return None
            row = await session.scalar(select(JobRow).where(JobRow.id == job_id))
        if row is None or row.kind not in self._kinds:
            if row is not None:
                log.error("job %s has unknown kind %r; leaving it", job_id, row.kind)
            return None
        return Job(
            row.id,
            row.kind,
            row.key,
            dict(row.payload or {}),
            row.generation,
            row.attempts,
            row.max_attempts,
            self,
            owner,
        )

    async def _renew(self, job: Job, **values: Any) -> bool:
        now = utcnow()
        async with self.db.session() as session:
            result = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job.id,
                    JobRow.lease_owner == job._owner,
                    JobRow.generation == job.generation,
                    JobRow.state == RUNNING,
                )
                .values(lease_expire_time=now + timedelta(seconds=self.lease), update_time=now, **values)
                .execution_options(synchronize_session=False)
            )
            return affected(result) == 1

    async def _finish_job(self, job: Job, **values: Any) -> bool:
        async with self.db.session() as session:
            result = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job.id,
                    JobRow.lease_owner == job._owner,
                    JobRow.generation == job.generation,
                    JobRow.state == RUNNING,
                )
                .values(lease_owner=None, lease_expire_time=None, update_time=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )
            return affected(result) == 1

    async def _heartbeat(self, job: Job, handler_task: asyncio.Task) -> None:
        interval = max(self.lease / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                ok = await self._renew(job)
            except Exception:
                log.warning("could not renew the lease of job %s", job.id, exc_info=True)
                continue  # the lease may still hold; the next renewal decides
            if not ok:
                log.info("job %s was taken over or re-enqueued; stopping this run", job.id)
                job.lost.set()
                handler_task.cancel()
                return

    async def _run(self, job: Job) -> None:
        kind = self._kinds[job.kind]
        started = time.perf_counter()
        if job.attempt > job.max_attempts:
            error = {
                "reason": "JOB_ABANDONED",
                "message": f"gave up after {job.max_attempts} attempts "
                "(the worker running it stopped or crashed each time)",
            }
            await self._fail(job, kind, error)
            JOBS_TOTAL.labels(job.kind, "failed").inc()
            return
        handler_task = asyncio.create_task(kind.handler(job), name=f"job-{job.id}")
        heartbeat = asyncio.create_task(self._heartbeat(job, handler_task), name=f"lease-{job.id}")
        JOBS_RUNNING.labels(job.kind).inc()
        outcome = "done"
        try:
            try:
                await asyncio.shield(handler_task)
            except asyncio.CancelledError:
                if not handler_task.done():  # this delivery was cancelled (worker stopping): stop the handler too
                    handler_task.cancel()
                    with contextlib.suppress(BaseException):
                        await handler_task
                    if not job.lost.is_set():
                        await self._release(job)
                    outcome = "released"
                    raise
                if not job.lost.is_set():
                    raise
                outcome = "lost"
            except JobLost:
                outcome = "lost"
            except PermanentJobError as exc:
                outcome = "failed"
                await self._fail(job, kind, {"reason": exc.reason, "message": exc.message, "metadata": exc.metadata})
            except Exception as exc:
                log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, exc, exc_info=True)
                error = {"reason": "INTERNAL", "message": f"{type(exc).__name__}: {exc}"[:2000]}
                if job.attempt < job.max_attempts:
                    outcome = "retry"
                    delay = self.backoff * (2 ** (job.attempt - 1))
                    if kind.on_retry is not None:
                        try:
                            await kind.on_retry(job, error)
                        except Exception:
                            log.exception("on_retry hook of job %s (%s) failed", job.id, job.kind)
                    await self._finish_job(
                        job,
                        state=QUEUED,
                        error=error,
                        kick_time=None,
                        available_time=utcnow() + timedelta(seconds=delay),
                    )
                else:
                    outcome = "failed"
                    await self._fail(job, kind, error)
            else:
                if not await self._finish_job(
                    job, state=DONE, stage=DONE, progress=100, error=None, finish_time=utcnow()
                ):
                    outcome = "lost"
        finally:
            heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await heartbeat
            JOBS_RUNNING.labels(job.kind).dec()
            JOBS_TOTAL.labels(job.kind, outcome).inc()
            JOB_SECONDS.labels(job.kind).observe(time.perf_counter() - started)
        if outcome == "lost":
            await self._let_go(job)
        if outcome in ("lost", "retry"):
            self._wake.set()  # let the sweeper deliver the superseding generation or the retry soon

    async def _fail(self, job: Job, kind: _Kind, error: dict[str, Any]) -> None:
        if kind.on_failed is not None:
            try:
                await kind.on_failed(job, error)
            except Exception:  # the job still fails: a broken hook must not make it run forever
                log.exception("on_failed hook of job %s (%s) failed", job.id, job.kind)
        await self._finish_job(job, state=FAILED, error=error, finish_time=utcnow())

    async def _let_go(self, job: Job) -> None:
        """Drop a lease we still hold on a job that moved on (re-enqueued), so its new generation can start."""
        with contextlib.suppress(Exception):
            async with self.db.session() as session:
                await session.execute(
                    update(JobRow)
                    .where(JobRow.id == job.id, JobRow.lease_owner == job._owner)
                    .values(lease_owner=None, lease_expire_time=None, kick_time=None)
                    .execution_options(synchronize_session=False)
                )

    async def _release(self, job: Job) -> None:
        """Give a job back (graceful stop): queued again, this attempt not counted."""
        with contextlib.suppress(Exception):
            await self._finish_job(job, state=QUEUED, attempts=JobRow.attempts - 1, kick_time=None)
            log.info("released job %s for another worker", job.id)
