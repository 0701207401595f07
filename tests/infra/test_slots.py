"""Concurrency slots behind a gate (a model's breaker failure count, llm/inference.py): on Redis the counter is read
in the script that takes the slot; a counter at the gate takes nothing; off Redis the caller reads it itself."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from typecase.server.infra.slots import LocalConcurrency, RedisConcurrency

from .infra_support import unique


async def test_a_gated_acquire_takes_a_slot_below_the_gate_and_nothing_at_it(redis_url) -> None:
    slots = RedisConcurrency(redis_url, unique("tc-test-slots") + ":", lease_seconds=30, max_connections=4)
    counter = unique("tc-test-gate")
    client = aioredis.from_url(redis_url)
    try:
        lease, count = await slots.acquire_gated("m", 1, 0.0, counter, 3) or (None, -1)
        assert lease is not None and count == 0  # an absent counter reads 0
        assert await slots.acquire_gated("m", 1, 0.0, counter, 3) == (None, 0)  # the one slot is taken
        assert await slots.count("m") == 1
        await slots.release("m", lease)
        await client.set(counter, 3)
        assert await slots.acquire_gated("m", 1, 5.0, counter, 3) == (None, 3)  # at the gate: at once, no slot
        assert await slots.count("m") == 0
        await client.set(counter, 2)
        lease, count = await slots.acquire_gated("m", 0, 0.0, counter, 3) or (None, -1)
        assert lease is not None and count == 2
        assert await slots.acquire_gated("m", 0, 0.0, None, 3) is None  # no Redis key to read: not gated here
    finally:
        await client.delete(counter)
        await client.aclose()
        await slots.stop()


async def test_in_process_slots_leave_the_gate_to_the_caller() -> None:
    assert await LocalConcurrency().acquire_gated("m", 1, 0.0, "key", 3) is None


async def test_releases_made_together_free_every_slot_even_for_a_caller_cancelled_meanwhile(redis_url) -> None:
    """Releases under way together go in shared batches (slots.py): each frees its slot once it returns, and one
    whose caller is cancelled while waiting frees it all the same."""
    slots = RedisConcurrency(redis_url, unique("tc-test-slots") + ":", lease_seconds=30, max_connections=4)
    try:
        leases = [await slots.acquire("m", 6, 0.0) for _ in range(6)]
        other = await slots.acquire("n", 0, 0.0)
        assert None not in leases and other is not None and await slots.acquire("m", 6, 0.0) is None
        first = asyncio.create_task(slots.release("m", leases[0]))
        await asyncio.sleep(0)  # on its way: the next ones wait for it to end
        cancelled = asyncio.create_task(slots.release("m", leases[1]))
        rest = [asyncio.create_task(slots.release("m", lease)) for lease in leases[2:]]
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(first, *rest, slots.release("n", other))
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await slots.count("m") == 0 and await slots.count("n") == 0  # the cancelled one's too: same batch
    finally:
        await slots.stop()
