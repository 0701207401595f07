"""Shared infrastructure, started in order, stopped in reverse, each reporting its own health.

The embedded default needs no configuration: SQLite, in-process cache and bus, a local object directory and
an embedded vector store, all under the data dir. Each URL setting switches its resource to the production implementation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from typecase.server.config import Settings
from typecase.server.infra.cache import create_cache
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
        self.db = create_database(
            settings.secret("database_url"), settings.data_dir, pool_size=settings.database_pool_size
        )
        self.cache = create_cache(
            settings.secret("redis_url"),
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
