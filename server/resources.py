"""Shared infrastructure, started in order, stopped in reverse, each reporting its own health.

The embedded default needs no configuration: SQLite, in-process cache and bus, a local object directory and
an embedded vector store, all under the data dir. Each URL setting switches its resource to the production implementation.

Every Redis-backed piece is built here, by one decision (redis_url set or not), and app.py hands each to the domain
that uses it; no domain reads redis_url. Besides the cache (key/values, bus, streams): the job queue (Redis streams,
or SQL polling), `limits` storages for rate windows (auth's request limits and failure budgets, the LLM's per-model
rates) and counted slots (the LLM's in-flight requests per model). Those are started and stopped by their user
(the knowledge service decides whether this process runs jobs), so they are built on request, not started here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from typecase.server.config import Settings
from typecase.server.infra.cache import create_cache, limits_storage
from typecase.server.infra.queue import JobQueue
from typecase.server.infra.slots import Concurrency, LocalConcurrency, RedisConcurrency
from typecase.server.infra.sql import create_database
from typecase.server.infra.storage import create_storage
from typecase.server.infra.vectors import create_vector_store

log = logging.getLogger("typecase.resources")

HEALTH_TIMEOUT_SECONDS = 3.0
STREAMS_FILE = "eventlogs.sqlite3"  # embedded mode's event logs (infra/journal.py)


@dataclass
class Health:
    ok: bool
    detail: str


class Resources:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.redis_url = settings.secret("redis_url")  # the one decision: shared through Redis, or embedded
        self.db = create_database(
            settings.secret("database_url"),
            settings.data_dir,
            pool_size=settings.database_pool_size,
            ping_idle_seconds=settings.database_ping_idle_seconds,
        )
        self.cache = create_cache(
            self.redis_url,
            max_connections=settings.redis_max_connections,
            streams_file=settings.data_dir / STREAMS_FILE if settings.embedded_event_logs_durable else None,
        )
        self.storage = create_storage(
            data_dir=settings.data_dir,
            s3_endpoint=settings.s3_endpoint,
            s3_access_key=settings.s3_access_key,
            s3_secret_key=settings.secret("s3_secret_key"),
            s3_bucket=settings.s3_bucket,
            s3_region=settings.s3_region,
            s3_secure=settings.s3_secure,
        )
        self.vectors = create_vector_store(
            settings.milvus_uri,
            settings.data_dir,
            token=settings.secret("milvus_token"),
            embedded=settings.vector_store,
            compact_dead_ratio=settings.vector_compact_dead_ratio,
            compact_min_dead_rows=settings.vector_compact_min_dead_rows,
        )
        self.ordered = [self.db, self.cache, self.storage, self.vectors]
        self._started: list = []

    def job_queue(self) -> JobQueue:
        """The background job queue (knowledge ingestion): Redis streams wake workers, or SQL is polled."""
        s = self.settings
        return JobQueue(
            self.db,
            redis_url=self.redis_url,
            stream=s.jobs_stream,
            lease_seconds=s.jobs_lease_seconds,
            max_attempts=s.jobs_max_attempts,
            retry_backoff_seconds=s.jobs_retry_backoff_seconds,
            poll_seconds=s.jobs_poll_seconds,
            rekick_seconds=s.jobs_rekick_seconds,
            concurrency=s.jobs_concurrency,
            shutdown_grace_seconds=s.jobs_shutdown_grace_seconds,
        )

    def limits_storage(self, key_prefix: str):
        """A `limits` async storage for rate windows: Redis, counted by every replica, or this process's memory."""
        return limits_storage(self.redis_url, key_prefix, self.settings.redis_max_connections)

    def slots(self, key_prefix: str, lease_seconds: float) -> Concurrency:
        """Counted slots per key: leases in Redis shared by every replica, or counted in this process."""
        if self.redis_url:
            return RedisConcurrency(self.redis_url, key_prefix, lease_seconds, self.settings.redis_max_connections)
        return LocalConcurrency()

    async def start(self) -> None:
        for resource in self.ordered:
            try:
                await resource.start()
            except BaseException:
                log.error("resource %s failed to start", resource.name)
                await self.stop()
                raise
            self._started.append(resource)
            log.info("resource %s started", resource.name)

    async def stop(self) -> None:
        while self._started:
            resource = self._started.pop()
            try:
                await resource.stop()
            except Exception:
                log.exception("resource %s failed to stop cleanly", resource.name)

    async def health(self) -> dict[str, Health]:
        async def check(resource) -> Health:
            try:
                ok, detail = await asyncio.wait_for(resource.health(), HEALTH_TIMEOUT_SECONDS)
            except TimeoutError:
                ok, detail = False, f"no answer within {HEALTH_TIMEOUT_SECONDS:g}s"
            return Health(ok, detail)

        results = await asyncio.gather(*(check(r) for r in self.ordered))
        return {r.name: h for r, h in zip(self.ordered, results)}
