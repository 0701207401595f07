"""cancel_and_wait ends a loop that swallows a cancellation (as one catching errors around a Redis call can), and
gives up within its bound on one that never ends."""

from __future__ import annotations

import asyncio

from typecase.server.infra.stopping import cancel_and_wait


async def test_a_loop_that_swallows_one_cancellation_still_stops():
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # like a cancel turned into an error and logged

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done  # a single cancel is not enough
    await asyncio.wait_for(cancel_and_wait(task, timeout=5), 2)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_never_ends_is_given_up_after_the_bound(caplog):
    released = False

    async def stubborn() -> None:
        while not released:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    await cancel_and_wait(task, timeout=0.3)
    assert 0.3 <= asyncio.get_running_loop().time() - started < 2 and not task.done()
    assert "stubborn did not stop within 0.3 s" in caplog.text
    released = True
    task.cancel()
    await task
