"""MemoryCache: the embedded, single-process Cache (cache.py holds the interface, RedisCache and create_cache) with
Redis's semantics: values come back as bytes, TTLs in seconds with millisecond precision, stream ids "ms-seq";
pub/sub subscribers have bounded queues. journal.py builds the durable variant on it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .cache import Cache, Message, StreamEntry, Value, _encode, _ms, _parse_id

log = logging.getLogger("typecase.server.infra.cache")


@dataclass
class _Stream:
    ids: list[tuple[int, int]] = field(default_factory=list)
    entries: list[StreamEntry] = field(default_factory=list)


@dataclass
class _Waiters:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


@dataclass
class _Item:
    value: bytes | _Stream
    expires_at: float | None = None  # time.monotonic() deadline


class MemoryCache(Cache):
    """In-process cache and bus for single-process deployments and tests. Not shared between processes."""

    SUBSCRIBER_QUEUE = 10_000  # a subscriber that falls this far behind loses its oldest messages
    _SWEEP_EVERY = 30.0

    def __init__(self) -> None:
        self.name = "cache/memory"
        self._items: dict[str, _Item] = {}
        self._subscribers: dict[str, set[asyncio.Queue[Message]]] = {}
        self._stream_events: dict[str, _Waiters] = {}
        self._last_id = (0, 0)
        self._last_sweep = time.monotonic()

    def __repr__(self) -> str:
        return "MemoryCache()"

    async def health(self) -> tuple[bool, str]:
        return True, f"memory ok ({len(self._items)} keys)"

    async def stop(self) -> None:
        self._items.clear()

    def _live(self, key: str) -> _Item | None:
        """The item if present and not expired (expired items are dropped on access)."""
        item = self._items.get(key)
        if item is not None and item.expires_at is not None and item.expires_at <= time.monotonic():
            del self._items[key]
            return None
        return item

    def _store(self, key: str, item: _Item) -> None:
        self._items[key] = item
        now = time.monotonic()
        if now - self._last_sweep > self._SWEEP_EVERY:  # bound memory held by keys nobody reads again
            self._last_sweep = now
            for k in [k for k, v in self._items.items() if v.expires_at is not None and v.expires_at <= now]:
                del self._items[k]

    @staticmethod
    def _deadline(ttl: float | None) -> float | None:
        return None if ttl is None else time.monotonic() + _ms(ttl) / 1000

    def _bytes(self, key: str) -> bytes | None:
        item = self._live(key)
        if item is None:
            return None
        if not isinstance(item.value, bytes):
            raise TypeError(f"key {key!r} holds a stream, not a value")
        return item.value

    async def get(self, key: str) -> bytes | None:
        return self._bytes(key)

    async def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        self._store(key, _Item(_encode(value), self._deadline(ttl)))

    async def set_if_absent(self, key: str, value: Value, ttl: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._store(key, _Item(_encode(value), self._deadline(ttl)))
        return True

    async def delete(self, *keys: str) -> int:
        return sum(1 for k in keys if self._live(k) is not None and self._items.pop(k, None) is not None)

    async def delete_if_equals(self, key: str, value: Value) -> bool:
        if self._bytes(key) == _encode(value):
            del self._items[key]
            return True
        return False

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        current = self._bytes(key)
        try:
            new = (int(current) if current is not None else 0) + amount
        except ValueError:
            raise ValueError(f"key {key!r} does not hold an integer") from None
        item = self._items.get(key) if current is not None else None
        expires_at = item.expires_at if item is not None else None
        if expires_at is None and ttl is not None:
            expires_at = self._deadline(ttl)
        self._store(key, _Item(str(new).encode(), expires_at))
        return new

    async def expire(self, key: str, ttl: float) -> bool:
        deadline = self._deadline(ttl)
        item = self._live(key)
        if item is None:
            return False
        item.expires_at = deadline
        return True

    async def values_under(self, prefix: str) -> dict[str, bytes]:
        found = {}
        for key in [k for k in self._items if k.startswith(prefix)]:
            item = self._live(key)
            if item is not None and isinstance(item.value, bytes):
                found[key] = item.value
        return found

    async def publish(self, channel: str, data: bytes | str) -> int:
        payload = _encode(data)
        queues = self._subscribers.get(channel, ())
        for q in queues:
            if q.full():
                q.get_nowait()
                log.warning("memory cache subscriber on %r is too slow; dropped its oldest message", channel)
            q.put_nowait((channel, payload))
        return len(queues)

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[Message]]:
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        queue: asyncio.Queue[Message] = asyncio.Queue(self.SUBSCRIBER_QUEUE)
        for ch in channels:
            self._subscribers.setdefault(ch, set()).add(queue)
        try:
            yield _QueueIterator(queue)
        finally:
            for ch in channels:
                subs = self._subscribers.get(ch)
                if subs is not None:
                    subs.discard(queue)
                    if not subs:
                        del self._subscribers[ch]

    def _next_id(self) -> tuple[int, int]:
        # Like Redis: milliseconds plus a sequence, never going backwards even if the clock does.
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self._last_id

    def _stream(self, key: str, create: bool = False) -> _Stream | None:
        item = self._live(key)
        if item is None:
            if not create:
                return None
            item = _Item(_Stream())
            self._store(key, item)
        if not isinstance(item.value, _Stream):
            raise TypeError(f"key {key!r} holds a value, not a stream")
        return item.value

    async def xadd(self, stream: str, fields: dict[str, str | bytes], maxlen: int | None = None) -> str:
        s = self._stream(stream, create=True)
        assert s is not None
        sid = self._next_id()
        entry_id = f"{sid[0]}-{sid[1]}"
        s.ids.append(sid)
        s.entries.append((entry_id, {k: _encode(v) for k, v in fields.items()}))
        if maxlen is not None and len(s.ids) > maxlen:
            excess = len(s.ids) - maxlen
            del s.ids[:excess], s.entries[:excess]
        if (waiters := self._stream_events.pop(stream, None)) is not None:
            waiters.event.set()  # wake every blocked xread on this stream
        return entry_id

    def _after(self, stream: str, after_id: str | None, count: int | None) -> list[StreamEntry]:
        s = self._stream(stream)
        if s is None:
            return []
        start = 0 if after_id is None else bisect.bisect_right(s.ids, _parse_id(after_id))
        end = len(s.entries) if count is None else start + count
        return [(eid, dict(f)) for eid, f in s.entries[start:end]]

    async def xrange(self, stream: str, after_id: str | None = None, count: int | None = None) -> list[StreamEntry]:
        return self._after(stream, after_id, count)

    async def xread(
        self, stream: str, after_id: str = "$", block_ms: int | None = None, count: int | None = None
    ) -> list[StreamEntry]:
        if after_id == "$":
            s = self._stream(stream)
            after_id = s.entries[-1][0] if s and s.entries else "0-0"
        deadline = None if not block_ms else time.monotonic() + block_ms / 1000
        while True:
            entries = self._after(stream, after_id, count)
            if entries or block_ms is None:
                return entries
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return []
            waiters = self._stream_events.setdefault(stream, _Waiters())
            waiters.count += 1
            try:
                await asyncio.wait_for(waiters.event.wait(), timeout)
            except TimeoutError:
                return []
            finally:
                waiters.count -= 1
                if not waiters.count and self._stream_events.get(stream) is waiters:
                    del self._stream_events[stream]  # nobody waits on this stream any more

    async def delete_stream(self, stream: str) -> bool:
        return await self.delete(stream) == 1


class _QueueIterator:
    def __init__(self, queue: asyncio.Queue[Message]):
        self._queue = queue

    def __aiter__(self) -> _QueueIterator:
        return self

    async def __anext__(self) -> Message:
        return await self._queue.get()
