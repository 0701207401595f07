"""A resumable event log: every event of a stream-producing task (a chat turn, a flow run), in seq order, in a
cache stream (Redis, or memory when embedded), kept for a TTL after the task ends so that any client can replay
it from any seq and then follow it live.

Entries are `{s: seq, m: serialized response message, t: "1" on the terminal event}`. The owner chooses the key
of each log (`key(log_id)`) and what the payload is; the responses of one domain's streaming RPCs share one wire
layout (seq, id, event), so a payload is sent by any of them as is.

The replica running the task also keeps its events in a LiveLog, so its own readers follow it without a cache
round trip per event.

Appends are batched: what the tasks of a process append while a write is on its way goes in the next write, one
round trip (one Redis script) for all of them, so a busy replica does not pay one round trip per token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from typecase.server.infra.cache import Cache, EventRecord

log = logging.getLogger("typecase.eventlog")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    payload: bytes  # the serialized response message
    terminal: bool
    message: Any = None  # the message itself, when made on this replica (saves parsing it again)


class LiveLog:
    """The events of a task running on this replica. seqs are contiguous from `first_seq`:
    entries[i].seq == first_seq + i (a task resumed elsewhere or later continues an older log)."""

    __slots__ = ("entries", "first_seq", "_event")

    def __init__(self, first_seq: int = 1) -> None:
        self.entries: list[Entry] = []
        self.first_seq = first_seq
        self._event = asyncio.Event()

    def append(self, entry: Entry) -> None:
        self.entries.append(entry)
        event, self._event = self._event, asyncio.Event()
        event.set()

    @property
    def ended(self) -> bool:
        return bool(self.entries) and self.entries[-1].terminal

    async def read(self, after_seq: int) -> AsyncIterator[Entry]:
        """Replay after `after_seq` (as far as this log goes back), then follow until the terminal event."""
        index = max(0, after_seq - self.first_seq + 1)
        while True:
            event = self._event
            while index < len(self.entries):
                entry = self.entries[index]
                index += 1
                yield entry
                if entry.terminal:
                    return
            await event.wait()


class EventLog:
    def __init__(self, cache: Cache, ttl_seconds: float, running_ttl_seconds: float, key: Callable[[str], str]):
        self.cache = cache
        self.ttl = ttl_seconds
        self.running_ttl = running_ttl_seconds
        self.key = key
        self._pending: list[EventRecord] = []
        self._waiters: list[asyncio.Future] = []  # one per pending entry, in the same order
        self._flusher: asyncio.Task | None = None

    async def append(self, log_id: str, entry: Entry) -> None:
        """Write one entry; returns once it is stored (raises if the write failed: the caller may retry)."""
        ttl = None
        if entry.terminal:
            ttl = self.ttl
        elif entry.seq == 1:  # lives while the task may run, then `ttl` after it ended (set on the terminal event)
            ttl = self.running_ttl
        written = asyncio.get_running_loop().create_future()
        self._pending.append((self.key(log_id), entry.seq, entry.payload, entry.terminal, ttl))
        self._waiters.append(written)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="eventlog-flush")
        # Not shielded: a caller cancelled meanwhile cancels only its own future, which the flusher then skips (its
        # entry is written all the same).
        await written

    async def _flush(self) -> None:
        while self._pending:
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = [], []
            try:
                await self.cache.xadd_events(batch)
            except Exception as exc:
                for written in waiters:
                    if not written.done():
                        written.set_exception(exc)
                        written.exception()  # a caller that went away must not leave it "never retrieved"
            else:
                for written in waiters:
                    if not written.done():
                        written.set_result(None)

    async def entries(self, log_id: str) -> list[Entry]:
        """The whole log as stored now (empty when it expired or never existed)."""
        return [_entry(fields) for _, fields in await self.cache.xrange(self.key(log_id))]

    async def read(
        self,
        log_id: str,
        after_seq: int,
        poll_seconds: float,
        on_idle: Callable[[int], Awaitable[Entry | None]],
    ) -> AsyncIterator[Entry]:
        """Replay after `after_seq`, then follow until the terminal event.

        After `poll_seconds` without a new entry, `on_idle(last_seq_seen)` runs; it may return a terminal entry
        to end the read with (e.g. the task ended but its log is gone, or it was reaped), or None to keep waiting.
        """
        key = self.key(log_id)
        last_id = "0-0"
        last_seq = after_seq
        block_ms = max(1, int(poll_seconds * 1000))
        while True:
            batch = await self.cache.xread(key, after_id=last_id, block_ms=block_ms)
            if not batch:
                final = await on_idle(last_seq)
                if final is not None:
                    if final.seq > last_seq:
                        yield final
                    return
                continue
            for entry_id, fields in batch:
                last_id = entry_id
                entry = _entry(fields)
                if entry.seq <= last_seq:
                    if entry.terminal:
                        return  # the reader has seen the end already
                    continue  # replayed part the reader already has (or a duplicate after a reap race)
                last_seq = entry.seq
                yield entry
                if entry.terminal:
                    return


def _entry(fields: dict[str, bytes]) -> Entry:
    return Entry(int(fields["s"]), fields["m"], fields.get("t") == b"1")
