"""Coalescer: every delta to a consumer that keeps up, merged ones to a slow consumer, errors after the deltas
before them, and aclose closing the upstream at once; with a read-ahead task and without one."""

from __future__ import annotations

import asyncio

import pytest

from typecase.server.llm.coalesce import Coalescer
from typecase.server.llm.providers import STOP, Delta, UpstreamError


class Upstream:
    """Deltas put by the test, read as an adapter's stream; records whether it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    async def stream(self):
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason:
                    return
        finally:
            self.closed = True


@pytest.mark.parametrize("read_ahead", [True, False])
async def test_a_consumer_that_keeps_up_gets_every_delta_then_the_end(read_ahead):
    upstream = Upstream()
    coalescer = Coalescer(upstream.stream(), read_ahead=read_ahead)
    for text in ("a", "b"):
        upstream.queue.put_nowait(Delta(text))
        assert (await coalescer.take()).text == text
    upstream.queue.put_nowait(Delta("c", finish_reason=STOP, completion_tokens=3))
    last = await coalescer.take()
    assert (last.text, last.finish_reason, last.completion_tokens) == ("c", STOP, 3)
    assert await coalescer.take() is None
    await coalescer.aclose()
    assert upstream.closed


async def test_a_slow_consumer_gets_what_piled_up_as_one_delta():
    upstream = Upstream()
    coalescer = Coalescer(upstream.stream())  # one delta per token upstream: the read-ahead task merges them
    for text in ("a", "b", "c"):
        upstream.queue.put_nowait(Delta(text))
    await asyncio.sleep(0.01)
    assert (await coalescer.take()).text == "abc"
    await coalescer.aclose()


@pytest.mark.parametrize("read_ahead", [True, False])
async def test_an_error_comes_after_the_deltas_before_it(read_ahead):
    upstream = Upstream()
    coalescer = Coalescer(upstream.stream(), read_ahead=read_ahead)
    upstream.queue.put_nowait(Delta("a"))
    assert (await coalescer.take()).text == "a"
    upstream.queue.put_nowait(UpstreamError("unavailable", "broken off"))
    with pytest.raises(UpstreamError, match="broken off"):
        await coalescer.take()
    await coalescer.aclose()
    assert upstream.closed


@pytest.mark.parametrize("read_ahead", [True, False])
async def test_aclose_closes_the_upstream_at_once(read_ahead):
    upstream = Upstream()
    coalescer = Coalescer(upstream.stream(), read_ahead=read_ahead)
    upstream.queue.put_nowait(Delta("a"))
    assert (await coalescer.take()).text == "a"
    taking = asyncio.create_task(coalescer.take())  # waits on an upstream that sends nothing more
    await asyncio.sleep(0.01)
    taking.cancel()  # the caller went away
    await asyncio.wait([taking])
    await coalescer.aclose()
    assert upstream.closed
