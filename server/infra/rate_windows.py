"""Moving-window rate limits in this process's memory (the embedded default), and on Redis several windows hit in
one round trip (RedisMovingWindow); everything else about Redis-backed limits stays with the `limits` library.

limits 5.8's in-memory storage costs ~45 us per hit on the 2-core VM, and every authenticated call makes two
(per key, per user) before its first byte: the hit runs through four nested error-wrapping coroutines, an
asyncio.Lock, an IndexError on every call under the limit, and the key string rebuilt each time. Its expiry sweep
was worse: a task per hit and a thread round trip per key. Here the storage sweeps inline at most once a second,
and `MemoryMovingWindow.hit` takes the entry synchronously (no await inside, so nothing interleaves and no lock is
needed) on the same per-key entry lists, so `test`, `get_window_stats` and `clear` of limits' own limiter see
exactly the windows it keeps. The override replaces a name-mangled method, so limits is pinned to 5.8.x.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage.memory import Entry
from limits.aio.strategies import MovingWindowRateLimiter

MAX_CACHED_KEYS = 10_000  # window key strings kept per limiter; the cache starts over beyond (callers' ids vary)


class InlineSweepMemoryStorage(MemoryStorage):
    """limits' in-process storage with its expiry sweep done inline, at most once every SWEEP_EVERY seconds."""

    SWEEP_EVERY = 1.0
    _next_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:
        self.maybe_sweep()

    def maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY
            self._sweep(time.time())

    def _sweep(self, now: float) -> None:  # no await inside: nothing interleaves, so no lock is needed
        for key, events in list(self.events.items()):  # newest first, by expiry
            kept = events[: bisect.bisect_left(events, -now, key=lambda event: -event.expiry)]
            if kept:
                self.events[key] = kept
            else:
                del self.events[key]
        for key, when in list(self.expirations.items()):
            if when <= now:
                self.storage.pop(key, None)
                del self.expirations[key]
        for key in [
            k for k, lock in self.locks.items() if not lock.locked() and k not in self.events and k not in self.storage
        ]:
            del self.locks[key]

    def acquire_now(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """limits' acquire_entry without the coroutine layers: `amount` entries if the window has room."""
        if amount > limit:
            return False
        self.maybe_sweep()
        events = self.events.get(key)
        if events is None:
            events = self.events[key] = []
        index = limit - amount
        if index < len(events) and events[index].atime >= time.time() - expiry:
            return False
        events[:0] = [Entry(expiry)] * amount  # newest first, as limits keeps them
        return True


class MemoryMovingWindow(MovingWindowRateLimiter):
    """limits' moving-window limiter over InlineSweepMemoryStorage, with `hit` taken synchronously."""

    storage: InlineSweepMemoryStorage

    def __init__(self, storage: InlineSweepMemoryStorage):
        super().__init__(storage)
        self._keys: dict[tuple[Any, tuple[str, ...]], str] = {}

    async def hit(self, item: Any, *identifiers: str, cost: int = 1) -> bool:
        key = self._keys.get((item, identifiers))
        if key is None:
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[(item, identifiers)] = item.key_for(*identifiers)
        return self.storage.acquire_now(key, item.amount, item.get_expiry(), cost)


# KEYS: the windows, in order, then optionally one key to read. ARGV: the time, then (limit, expiry) per window.
# limits' acquire_moving_window for one entry, window after window, stopping at the first that is full: {its index
# (1-based)}, or {0, the value of the key to read} when every one took it (the caller's cached access: auth/guard.py).
_HIT_IN_TURN = """
local timestamp = tonumber(ARGV[1])
local windows = (#ARGV - 1) / 2
for k = 1, windows do
  local limit = tonumber(ARGV[2 * k])
  local expiry = tonumber(ARGV[2 * k + 1])
  if limit < 1 then return {k} end
  local entry = redis.call('lindex', KEYS[k], limit - 1)
  if entry and tonumber(entry) >= timestamp - expiry then return {k} end
  redis.call('lpush', KEYS[k], timestamp)
  redis.call('ltrim', KEYS[k], 0, limit - 1)
  redis.call('expire', KEYS[k], expiry)
end
if #KEYS > windows then return {0, redis.call('GET', KEYS[#KEYS])} end
return {0}
"""


class NotRead:
    """hit_and_read's value when the key was not read along (the windows are in memory, or one was full)."""


NOT_READ = NotRead()


class RedisMovingWindow(MovingWindowRateLimiter):
    """limits' moving-window limiter on its Redis storage (redis-py), with `hit_in_turn`: the windows of a call
    (per key, per user) in one script instead of one limits call each (~0.1 ms of client CPU per round trip)."""

    storage: RedisStorage

    def __init__(self, storage: RedisStorage):
        super().__init__(storage)
        self._keys: dict[tuple[Any, tuple[str, ...]], str] = {}
        self._script = storage.bridge.get_connection().register_script(_HIT_IN_TURN)  # type: ignore[attr-defined]  # RedispyBridge's

    def _key(self, item: Any, identifiers: tuple[str, ...]) -> str:
        key = self._keys.get((item, identifiers))
        if key is None:
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[(item, identifiers)] = self.storage.bridge.prefixed_key(item.key_for(*identifiers))
        return key

    async def hit_in_turn(self, hits: list[tuple[Any, tuple[str, ...]]], read: str | None = None) -> tuple[int, Any]:
        """The index of the first full window (-1: none), and the value of the Redis key `read` (None when absent,
        NOT_READ when not asked for or a window was full)."""
        keys = [self._key(item, identifiers) for item, identifiers in hits]
        args: list[float | int] = [time.time()]
        for item, _ in hits:
            args += (item.amount, item.get_expiry())
        if read is not None:
            keys.append(read)
        reply = await self._script(keys=keys, args=args)
        return int(reply[0]) - 1, reply[1] if len(reply) > 1 else NOT_READ


async def hit_and_read(
    limiter: MovingWindowRateLimiter, hits: list[tuple[Any, tuple[str, ...]]], read: str | None
) -> tuple[int, Any]:
    """Hit each (limit, identifiers) in order until one is full: that one's index, or -1 when every one took its
    hit (the ones before a full window keep theirs, as separate hits would). And the value of the Redis key `read`
    (bytes or None) got in the same round trip when the windows are on Redis and every one took its hit; NOT_READ
    otherwise (the caller reads it itself)."""
    if isinstance(limiter, RedisMovingWindow) and (len(hits) > 1 or read is not None):
        return await limiter.hit_in_turn(hits, read)
    for index, (item, identifiers) in enumerate(hits):
        if not await limiter.hit(item, *identifiers):
            return index, NOT_READ
    return -1, NOT_READ


def moving_window_limiter(storage: Any) -> MovingWindowRateLimiter:
    """The moving-window limiter for a `limits` storage (Resources.limits_storage): the lean one in memory, the
    one that hits several windows in one script on Redis through redis-py."""
    if isinstance(storage, InlineSweepMemoryStorage):
        return MemoryMovingWindow(storage)
    if isinstance(storage, RedisStorage) and type(storage.bridge).__name__ == "RedispyBridge":
        return RedisMovingWindow(storage)
    return MovingWindowRateLimiter(storage)
