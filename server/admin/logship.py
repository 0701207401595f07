"""Live log lines of every worker and replica, for AdminService's StreamLogs (the stats' side is proxy/shared.py).

Under `serve --workers N` (or several replicas on one Redis) each process keeps its own log lines, while a
StreamLogs call lands on one of them. With redis_url set:

- Log lines go through one channel. A process numbers its pending lines from one Redis counter (one INCRBY per
  batch, every proxy_log_share_seconds), publishes them, already redacted, as JSON lines on `admin:logs`, and
  appends them to its history file; every process's StreamLogs clients are fed from that channel, so a client sees
  every worker's lines, in one `seq` order per batch. Nothing is decoded while nobody streams.

Without Redis (embedded, one process) none of this runs and LogHub works alone. If Redis is unreachable, log lines
are numbered locally until it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from typecase.server.infra.cache import Cache, listen_forever
from typecase.server.infra.stopping import cancel_and_wait

LOG_CHANNEL = "admin:logs"
LOG_SEQ_KEY = "admin:logs:seq"


class LogShipper:
    """Numbers log lines cluster-wide, publishes them and feeds lines of every process to `deliver`."""

    def __init__(self, cache: Cache, deliver: Callable[[list[str]], None]):
        self.cache = cache
        self.deliver = deliver
        self.ready = asyncio.Event()
        self._listener: asyncio.Task | None = None

    async def start(self, last_seq: int) -> None:
        """Continue the cluster sequence, never below this history's last seq."""
        await self.cache.set_if_absent(LOG_SEQ_KEY, last_seq)
        current = await self.cache.incr(LOG_SEQ_KEY, 0)
        if current < last_seq:
            await self.cache.incr(LOG_SEQ_KEY, last_seq - current)
        self._listener = asyncio.create_task(
            listen_forever(self.cache, LOG_CHANNEL, self._received, self.ready, "log stream"), name="log-listen"
        )
        async with asyncio.timeout(10):
            await self.ready.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self._listener)
        self._listener = None

    async def numbers(self, count: int) -> int:
        """The first of `count` consecutive seq numbers reserved for this process."""
        return await self.cache.incr(LOG_SEQ_KEY, count) - count + 1

    async def last(self) -> int:
        """The last seq number reserved by any process."""
        return await self.cache.incr(LOG_SEQ_KEY, 0)

    async def publish(self, lines: list[str]) -> None:
        await self.cache.publish(LOG_CHANNEL, "\n".join(lines))

    def _received(self, text: str) -> None:
        self.deliver(text.splitlines())
