"""The waits that differ between the two clients, as pairs of functions: _async/ awaits the `async_` ones, and the
_sync/ generated from it calls the same names without the prefix (scripts/gen_sync.py strips it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_run_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking call (a file read) in a worker thread, so that the event loop goes on meanwhile."""
    return await asyncio.to_thread(function, *args, **kwargs)


def run_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """The blocking client makes the call in its caller's thread."""
    return function(*args, **kwargs)
