"""What ingestion and the chunk editor share to write vectors: Collections (the knowledge bases' vector collections
as this process uses them: opened once, inserts buffered and flushed in batches) and EmbedBatcher (embedding calls
of concurrent jobs merged into full batches). Kept apart from ingest.py, whose concern is the job itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("typecase.knowledge.ingest")


class Collections:
    """The Milvus collections of knowledge bases as this process uses them.

    - A collection must be loaded before search/delete/count, and a Milvus restart (or a new process) finds it
      released: `open()` loads each collection once per process.
    - Freshly upserted rows sit in a growing segment that is searched by brute force (measured with milvus-lite:
      20k unflushed rows cost ~650 ms a query, ~30 ms once flushed): `wrote()` flushes after `flush_rows` rows,
      `settle()` flushes a collection `flush_delay` seconds after its last write.
    """

    def __init__(self, vectors, flush_rows: int = 2000, flush_delay: float = 2.0):
        self.vectors = vectors
        self.flush_rows = flush_rows
        self.flush_delay = flush_delay
        self._loaded: set[str] = set()
        self._unflushed: dict[str, int] = {}
        self._timers: dict[str, asyncio.Task] = {}

    async def create(self, name: str, dim: int) -> None:
        if name not in self._loaded:  # once per process: describe + load cost ~0.1 s a call
            await self.vectors.ensure_collection(name, dim)  # creates, or checks the dimension and loads
            self._loaded.add(name)

    async def open(self, name: str, dim: int) -> bool:
        """True when the collection exists (and is now loaded)."""
        if name in self._loaded:
            return True
        if not await self.vectors.has_collection(name):
            return False
        if dim > 0:
            await self.vectors.ensure_collection(name, dim)
            self._loaded.add(name)
        return True

    def forget(self, name: str) -> None:
        self._loaded.discard(name)
        self._unflushed.pop(name, None)
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    async def wrote(self, name: str, rows: int) -> None:
        self._unflushed[name] = self._unflushed.get(name, 0) + rows
        if self._unflushed[name] >= self.flush_rows:
            await self.flush(name)

    def settle(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if self._unflushed.get(name):
            self._timers[name] = asyncio.create_task(self._flush_later(name))

    async def _flush_later(self, name: str) -> None:
        await asyncio.sleep(self.flush_delay)
        self._timers.pop(name, None)
        with contextlib.suppress(Exception):
            await self.flush(name)

    async def flush(self, name: str) -> None:
        self._unflushed[name] = 0
        flush = getattr(self.vectors, "flush", None)
        if flush is not None:
            await flush(name)
        else:  # VectorStore has no flush() yet: the same call through its thread-safe runner
            await self.vectors.flush(name)

    async def close(self) -> None:
        timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()


class EmbedBatcher:
    """Merges the embedding calls of concurrent ingestion jobs into full batches.

    A job embeds a batch of its own chunks; a small file has only one or two, so alone it would call the model
    with tiny batches (and a local CPU model embeds a batch of 64 far faster than 32 batches of 2). Calls that
    arrive within `max_wait` of each other for the same model are sent as one call of up to `batch_size` texts;
    at most `parallel` merged calls run at once.
    """

    def __init__(self, llm, batch_size: int = 64, max_wait: float = 0.02, parallel: int = 1):
        self.llm = llm
        self.batch_size = batch_size
        self.max_wait = max_wait
        self._queue: asyncio.Queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(max(parallel, 1))
        self._loop_task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()

    async def embed(self, texts: list[str], model_id: str) -> list[list[float]]:
        if not texts:
            return []
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name="embed-batcher")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((model_id, list(texts), future))
        return await future

    async def _run(self) -> None:
        later: list = []
        while True:
            first = later.pop(0) if later else await self._queue.get()
            group, size = [first], len(first[1])
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while size < self.batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                if item[0] != first[0] or size + len(item[1]) > self.batch_size:
                    later.append(item)
                    if item[0] == first[0]:
                        break
                    continue
                group.append(item)
                size += len(item[1])
            await self._slots.acquire()
            task = asyncio.create_task(self._call(first[0], group))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, model_id: str, group: list) -> None:
        try:
            live = [(texts, future) for _, texts, future in group if not future.done()]
            if not live:
                return
            merged = [t for texts, _ in live for t in texts]
            try:
                vectors = await self.llm.embed_texts(merged, model_id)
            except Exception as exc:
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                return
            start = 0
            for texts, future in live:
                if not future.done():
                    future.set_result(vectors[start : start + len(texts)])
                start += len(texts)
        finally:
            self._slots.release()

    async def close(self) -> None:
        for task in [self._loop_task, *self._calls]:
            if task is not None:
                task.cancel()
        while not self._queue.empty():
            _, _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the embedding batcher stopped"))
