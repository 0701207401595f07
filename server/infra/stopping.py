"""Stopping a background loop for sure, within a bound.

`task.cancel()` then `await task` hangs a shutdown when the loop swallows its cancellation: a loop that catches
`Exception` around a Redis call can see the cancel turned into a timeout or connection error inside redis-py's
pool wait, log it, and go round again (seen: a shared-stats publisher kept an App.stop waiting for ever after its
Redis database was flushed under it). cancel_and_wait cancels again until the task ends, and gives up after
`timeout` seconds with a warning instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("typecase.stopping")

RECANCEL_SECONDS = 0.1


async def cancel_and_wait(task: asyncio.Task | None, timeout: float = 5.0) -> None:
    """Cancel `task` and wait for it to end, cancelling again every RECANCEL_SECONDS, for at most `timeout` s."""
    if task is None or task.done():
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.warning("background task %s did not stop within %g s of being cancelled", task.get_name(), timeout)
            return
        await asyncio.wait({task}, timeout=min(RECANCEL_SECONDS, left))
    if not task.cancelled() and task.exception() is not None:
        log.debug("background task %s ended with %r", task.get_name(), task.exception())
