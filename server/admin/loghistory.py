"""One log history per machine when several processes share a data dir (`serve --workers N`).

Every process sees every process's log lines on the shared channel (shared.py). If each appended its own lines to
the same files, as one process does, the files would hold batches out of `seq` order (StreamLogs' replay stops at
the first line at or below the seq it resumes from, and would miss lines), two processes could rotate the same file
at once (losing one), a clear could drop lines another process appended meanwhile, and a query on one process would
miss what another had not flushed yet. So:

- One process writes: the one holding an exclusive flock on `<dir>.writer` (beside the history directory). It
  appends every line it receives on the channel in seq order, holding back lines above a missing seq for up to
  GAP_WAIT_SECONDS. The others try the lock at every flush
  (a failed non-blocking flock costs two system calls), so when the writer dies the kernel frees the lock and
  another process takes over within a flush period. The new writer first appends the lines it received lately
  that the history lacks (seq above the history's last), so a takeover loses nothing it saw.
- File operations (append, rotate, clear, the one-time redaction) hold an flock on `<dir>.lock`, so a clear on
  one process and an append on the writer never interleave.
- A query, a replay or a clear first waits (up to proxy_log_history_wait_seconds) until the writer has written
  every line numbered so far (the cluster counter's value; the writer records its last written seq in
  `<dir>.written`), so a query on any process sees what any process had published. A number reserved by a process
  that died before publishing makes queries wait that long until a later line is written.

A process whose lines could not be published (the cache down) appends them itself, as one process does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

try:
    import fcntl
except ImportError:  # Windows: one process per data dir there (no SO_REUSEPORT workers)
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from typecase.server.admin.logstream import LogFiles

log = logging.getLogger("typecase.proxy")

# A line above a missing seq waits this long for it: numbers are reserved before their lines are published, so
# another process's batch can arrive after a later one (a process that died after reserving leaves the gap open).
GAP_WAIT_SECONDS = 0.5


def _beside(directory: Path, suffix: str) -> Path:
    directory = directory.resolve()  # the same lock files whichever way the directory is reached
    return directory.with_name(directory.name + suffix)


def seq_of(text: str) -> int:
    try:
        return int(orjson.loads(text)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0


class DirLock:
    """A thread lock and an exclusive flock on `<dir>.lock`: LogFiles' writes exclusive across processes."""

    def __init__(self, directory: Path):
        self.path = _beside(directory, ".lock")
        self._thread = threading.Lock()
        self._fd = -1

    def __enter__(self) -> DirLock:
        self._thread.acquire()
        if fcntl is not None:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._release()
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
        self._thread.release()


class HistoryWriter:
    """Decides whether this process appends the shared lines to the history, and does so when it is the writer."""

    def __init__(self, files: LogFiles, wait_seconds: float = 2.0, keep_lines: int = 10_000):
        self.files = files
        self.wait_seconds = wait_seconds
        self.lock_path = _beside(files.directory, ".writer")
        self.mark_path = _beside(files.directory, ".written")
        self._fd: int | None = None  # held while this process is the writer
        self._pending: list[str] = []
        self._recent: deque[str] = deque(maxlen=keep_lines)  # what a new writer may still owe the history
        self._written = 0
        self._held_since: float | None = None  # since when lines above a missing seq are held back
        self._lock = asyncio.Lock()

    @property
    def leading(self) -> bool:
        return self._fd is not None

    def received(self, texts: list[str]) -> None:
        """Lines of every process, from the channel (event loop)."""
        (self._pending if self.leading else self._recent).extend(texts)

    def _try_lead(self) -> bool:
        if fcntl is None:
            return True
        self.lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def flush(self, everything: bool = False) -> None:
        """Writer: append what was received (`everything`: held-back lines too, at a stop). Others: take over if
        the writer is gone."""
        async with self._lock:
            if not self.leading:
                if not await asyncio.to_thread(self._try_lead):
                    return
                last = await asyncio.to_thread(self.files.last_seq)
                owed = [text for text in self._recent if seq_of(text) > last]
                self._recent.clear()
                self._pending[:0] = owed
                self._written = last
                log.info("this process now writes the log history (%d lines owed by the previous writer)", len(owed))
            batch = self._ready_batch(everything)
            if batch:
                await asyncio.to_thread(self._append, batch)

    def _ready_batch(self, everything: bool) -> list[str]:
        """The pending lines to append now, in seq order: those up to the first missing seq, the rest held back
        (another process's batch may still be on its way) until the gap fills or has lasted GAP_WAIT_SECONDS."""
        pending = sorted(self._pending, key=seq_of)
        expected, cut = self._written + 1, len(pending)
        for index, text in enumerate(pending):
            if seq_of(text) > expected:
                cut = index
                break
            expected = max(expected, seq_of(text) + 1)
        now = time.monotonic()
        waited = self._held_since is not None and now - self._held_since >= GAP_WAIT_SECONDS
        if cut < len(pending) and not (everything or waited):
            self._held_since = self._held_since or now
            ready, self._pending = pending[:cut], pending[cut:]
        else:
            ready, self._pending, self._held_since = pending, [], None
        return ready

    def _append(self, batch: list[str]) -> None:
        self.files.append(batch)
        self._written = max(self._written, seq_of(batch[-1]))
        tmp = self.mark_path.with_name(self.mark_path.name + ".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(str(self._written))
        os.replace(tmp, self.mark_path)

    def _mark(self) -> int:
        try:
            return int(self.mark_path.read_text() or 0)
        except (OSError, ValueError):
            return 0

    async def caught_up(self, seq: int) -> bool:
        """Wait until the history holds the lines up to `seq`."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            await self.flush()
            written = self._written if self.leading else await asyncio.to_thread(self._mark)
            if written >= seq:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
