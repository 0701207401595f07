"""Latency-neutral coalescing of a delta stream.

A stream whose every delta already holds all that its upstream sent since the last one was taken (an adapter
with `merges_reads`: the HTTP ones, reading what their connection buffered) is read directly by the consumer, on
its own task: a consumer that falls behind gets merged deltas all the same, and a token costs no second task
step and no Event set, clear and wait (a pump task woken per token, then the consumer).

Other streams (local models: one delta per token, however far behind the consumer is) are read by a task of
their own; the consumer takes everything that piled up since its last take, merged
into one delta. A consumer that keeps up gets every token as its own message (nothing waits for a batch to
fill); one that is slower than the upstream (a busy gRPC channel, a loaded server) gets fewer, larger messages
instead of falling behind, which is what keeps the per-message cost of gRPC/SSE/WebSocket off the relay's
throughput.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from typecase.server.llm.providers import Delta, merge_tool_deltas

MAX_PENDING_CHARS = 256 * 1024  # stop reading ahead of a consumer that stopped taking


class Coalescer:
    def __init__(self, stream: AsyncGenerator[Delta, None], *, read_ahead: bool = True):
        self._stream = stream
        self._pending: list[Delta] = []
        self._pending_chars = 0
        self._error: BaseException | None = None
        self._finished = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task = asyncio.create_task(self._pump()) if read_ahead else None

    async def _pump(self) -> None:
        try:
            async for delta in self._stream:
                self._pending.append(delta)
                self._pending_chars += (
                    len(delta.text)
                    + len(delta.reasoning)
                    + (sum(len(c.arguments) for c in delta.tool_calls) if delta.tool_calls else 0)
                )
                self._ready.set()
                if delta.finish_reason:
                    # Stop here: the adapter finishes its stream (drains, pools the connection) in aclose(),
                    # outside this task, so that nothing needs cancelling on the normal path.
                    return
                if self._pending_chars > MAX_PENDING_CHARS:
                    self._room.clear()
                    await self._room.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer after the deltas that came before it
            self._error = exc
        finally:
            self._finished = True
            self._ready.set()

    async def take(self) -> Delta | None:
        """Everything received since the last take, as one delta; None at the end. Raises the upstream's error
        once the deltas before it were taken."""
        if self._task is None:  # read directly; the stream merges what piled up
            if self._finished:
                return None
            try:
                delta = await anext(self._stream)
            except StopAsyncIteration:
                self._finished = True
                return None
            if delta.finish_reason:  # as the pump does: the stream is finished by aclose(), not read to its end
                self._finished = True
            return delta
        while not self._pending:
            if self._finished:
                if self._error is not None:
                    raise self._error
                return None
            self._ready.clear()
            await self._ready.wait()
        batch, self._pending, self._pending_chars = self._pending, [], 0
        self._room.set()
        if len(batch) == 1:
            return batch[0]
        last = batch[-1]
        calls = [c for d in batch if d.tool_calls for c in d.tool_calls]
        return Delta(
            "".join(d.text for d in batch),
            "".join(d.reasoning for d in batch),
            last.finish_reason,
            last.prompt_tokens,
            last.completion_tokens,
            merge_tool_deltas(calls) if calls else None,
        )

    async def aclose(self) -> None:
        """Stop reading and close the upstream stream (at once, mid-read if need be)."""
        if self._task is not None:
            if not self._task.done():
                self._task.cancel()
            await asyncio.wait([self._task])  # never raises the pump's cancellation (a cancel of ours still does)
        await self._stream.aclose()
