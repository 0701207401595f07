"""What AdminService shows across processes: the request stats of every worker and replica (the log lines' side is
admin/logship.py).

Under `serve --workers N` (or several replicas on one Redis) each process counts its own requests, while a GetStats
call lands on one of them. With redis_url set, stats are aggregated on read. Each process publishes a snapshot of
its RequestStats (totals, per surface, per model, in flight, the retained recent requests and errors) under
`admin:stats:<worker>` with a TTL of a few publish periods, only when something changed since the last one (an idle
process only refreshes the TTL). GetStats and ListErrors merge this process's live stats with every other live
snapshot: counters summed, recent requests and errors merged by time, p95 over the merged retained requests (what
one process computes today). A worker that stopped drops out when its key expires; a restarted one starts from
zero, as one process does.

Without Redis (embedded, one process) none of this runs: RequestStats works exactly as before. If Redis is
unreachable, GetStats answers with this process's stats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import os
import secrets
import socket
from collections import Counter
from dataclasses import dataclass, fields

import orjson

from typecase.server.infra.cache import Cache
from typecase.server.infra.stopping import cancel_and_wait
from typecase.server.proxy.stats import Aggregate, ErrorRecord, ModelAggregate, RequestRecord, RequestStats

log = logging.getLogger("typecase.proxy")

STATS_PREFIX = "admin:stats:"
_RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))
_ERROR_FIELDS = tuple(f.name for f in fields(ErrorRecord))
_AGG_NUMBERS = tuple(f.name for f in fields(Aggregate) if f.name not in ("by_status", "by_path", "by_model"))
_MODEL_FIELDS = tuple(f.name for f in fields(ModelAggregate))
_record_values = operator.attrgetter(*_RECORD_FIELDS)
_error_values = operator.attrgetter(*_ERROR_FIELDS)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class StatsView:
    """The stats of several processes, shaped like RequestStats for AdminService (lists oldest first)."""

    start_time: float
    max_keys: int
    totals: Aggregate
    by_source: dict[int, Aggregate]
    in_flight: int
    recent: list[RequestRecord]
    errors: list[ErrorRecord]


def _agg_out(agg: Aggregate) -> dict:
    out = {name: getattr(agg, name) for name in _AGG_NUMBERS}
    out["by_status"] = dict(agg.by_status)
    out["by_path"] = dict(agg.by_path)
    out["by_model"] = {k: [getattr(m, f) for f in _MODEL_FIELDS] for k, m in agg.by_model.items()}
    return out


def _agg_in(data: dict) -> Aggregate:
    agg = Aggregate(**{name: data[name] for name in _AGG_NUMBERS})
    agg.by_status = Counter(data["by_status"])
    agg.by_path = Counter(data["by_path"])
    agg.by_model = {k: ModelAggregate(*v) for k, v in data["by_model"].items()}
    return agg


def snapshot(stats: RequestStats, worker: str) -> bytes:
    return orjson.dumps(
        {
            "worker": worker,
            "start": stats.start_time,
            "in_flight": stats.in_flight,
            "totals": _agg_out(stats.totals),
            "by_source": {str(k): _agg_out(v) for k, v in stats.by_source.items()},
            "recent": list(map(_record_values, stats.recent)),
            "errors": list(map(_error_values, stats.errors)),
        },
    )


def merged(local: RequestStats, snapshots: list[bytes]) -> StatsView:
    """This process's live stats plus other processes' snapshots. Errors get ids from their time in microseconds
    (unique across processes but for two errors in the same microsecond), so ListErrors pages by id as before."""
    keys = local.max_keys
    totals, by_source = Aggregate(), dict[int, Aggregate]()
    start, in_flight = local.start_time, local.in_flight
    recent, errors = list(local.recent), [dataclasses.replace(e) for e in local.errors]  # ids are rewritten

    def add(total: Aggregate, sources: dict[int, Aggregate]) -> None:
        totals.merge(total, keys)
        for source, agg in sources.items():
            by_source.setdefault(source, Aggregate()).merge(agg, keys)

    add(local.totals, local.by_source)
    for blob in snapshots:
        try:
            data = orjson.loads(blob)
            add(_agg_in(data["totals"]), {int(k): _agg_in(v) for k, v in data["by_source"].items()})
            start, in_flight = min(start, data["start"]), in_flight + data["in_flight"]
            recent += [RequestRecord(*r) for r in data["recent"]]
            errors += [ErrorRecord(*e) for e in data["errors"]]
        except (ValueError, KeyError, TypeError) as exc:  # another version's format (orjson: ValueError): skipped
            log.warning("skipping an unreadable stats snapshot: %s", exc)
    recent.sort(key=lambda r: r.time)
    errors.sort(key=lambda e: (e.time, e.id))
    last = 0
    for e in errors:  # time-based ids, strictly increasing in list order
        e.id = last = max(last + 1, int(e.time * 1_000_000))
    return StatsView(start, keys, totals, by_source, in_flight, recent, errors)


class SharedStats:
    """Publishes this process's RequestStats and merges every live process's on read."""

    def __init__(self, cache: Cache, stats: RequestStats, every: float):
        self.cache = cache
        self.stats = stats
        self.every = every
        self.ttl = max(3 * every, every + 2.0)
        self.worker = worker_id()
        self.key = STATS_PREFIX + self.worker
        self._published = -1
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever(), name="stats-share")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            async with asyncio.timeout(5):  # a stop must not wait on the shared store for ever
                await self.cache.delete(self.key)  # gone at once, not after the TTL
        except Exception:
            pass

    async def publish(self) -> None:
        if self.stats.changes != self._published:
            changes = self.stats.changes
            await self.cache.set(self.key, snapshot(self.stats, self.worker), self.ttl)
            self._published = changes
        else:
            await self.cache.expire(self.key, self.ttl)

    async def _publish_forever(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:
                self._published = -1  # republish when the cache is back
                log.warning("cannot publish request stats to the cache: %s", exc)
            await asyncio.sleep(self.every)

    async def view(self) -> StatsView:
        try:
            found = await self.cache.values_under(STATS_PREFIX)
        except Exception as exc:
            log.warning("cannot read other processes' request stats; showing this one's: %s", exc)
            found = {}
        found.pop(self.key, None)  # this process's own: its live stats, not the last snapshot
        return merged(self.stats, list(found.values()))
