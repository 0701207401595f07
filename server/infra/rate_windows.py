"""Moving-window rate limits in this process's memory (the embedded default; Redis-backed limits stay with the
`limits` library as they are).

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

from limits.aio.storage import MemoryStorage
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


def moving_window_limiter(storage: Any) -> MovingWindowRateLimiter:
    """The moving-window limiter for a `limits` storage (Resources.limits_storage): the lean one in memory."""
    if isinstance(storage, InlineSweepMemoryStorage):
        return MemoryMovingWindow(storage)
    return MovingWindowRateLimiter(storage)
