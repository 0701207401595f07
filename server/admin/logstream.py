"""Log lines: a live stream with backpressure, and a persisted, rotating history with query and clear.

Sources: the proxy's access lines (published directly, one per request) and the server's own Python logging records
at or above a capture level (a handler on the root logger).

Live: each StreamLogs client owns a bounded queue. Publishing never waits: when a client's queue is full its oldest
line is dropped and counted, and the next line it receives carries that count (`dropped_count`), so a slow reader
knows exactly how many lines it missed and never slows the proxy.

Across processes (redis_url, `serve --workers`): a shipper (logship.py) numbers lines from one counter, publishes
them and feeds every process's lines back to the live readers here; see logship.py.

History: lines are JSON documents, one a line, appended in batches by a background flusher (off the event loop) to
`<dir>/server.jsonl`, which rotates at `max_bytes` into `.1` ... `.<count>` (the oldest is deleted). `seq` keeps
increasing across restarts and clears. The files are private (0600, in a 0700 directory).

No credential is published, stored or served: a line's message and text fields pass through
typecase.server.redact when published, and history written before redaction existed is redacted in place once
(a `<dir>.redacted` marker beside the directory records it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from prometheus_client import Counter

from typecase.server.admin.loghistory import DirLock, HistoryWriter
from typecase.server.admin.logship import LogShipper
from typecase.server.infra.stopping import cancel_and_wait
from typecase.server.logs import trace_id_var
from typecase.server.redact import redact

DEBUG, INFO, WARNING, ERROR, CRITICAL = 1, 2, 3, 4, 5  # typecase.v1.LogLevel
LOG_FILE = "server.jsonl"
STOP_FLUSH_SECONDS = 5.0  # how long a stop waits to share its last lines (Redis, the history writer)
REDACTED_MARKER = ".redacted"  # <dir>.redacted: its history has been redacted in place

DROPPED = Counter(
    "typecase_proxy_log_lines_dropped_total", "Log lines skipped for StreamLogs clients that fell behind."
)


def level_of(python_level: int) -> int:
    if python_level >= logging.CRITICAL:
        return CRITICAL
    if python_level >= logging.ERROR:
        return ERROR
    if python_level >= logging.WARNING:
        return WARNING
    if python_level >= logging.INFO:
        return INFO
    return DEBUG


@dataclass(slots=True)
class LogLine:
    seq: int
    time: float
    level: int
    logger: str
    message: str
    trace_id: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "time": self.time,
                "level": self.level,
                "logger": self.logger,
                "message": self.message,
                "trace_id": self.trace_id,
                "fields": self.fields,
            },
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LogLine | None:
        try:
            d = json.loads(text)
            return cls(
                int(d["seq"]),
                float(d["time"]),
                int(d["level"]),
                str(d["logger"]),
                str(d["message"]),
                str(d.get("trace_id", "")),
                dict(d.get("fields") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return None  # a torn last line (crash mid-append) or a foreign line: skipped


def _redacted_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}


def _redacted_line(text: bytes) -> bytes:
    line = LogLine.from_json(text)
    if line is None:  # not ours, or torn: its raw text
        return redact(text.decode("utf-8", "replace")).encode()
    message, fields = redact(line.message), _redacted_fields(line.fields)
    if (message, fields) == (line.message, line.fields):
        return text
    line.message, line.fields = message, fields
    return line.to_json().encode()


@dataclass(frozen=True, slots=True)
class LogFilter:
    min_level: int = 0
    query: str = ""
    trace_id: str = ""
    start_time: float | None = None
    end_time: float | None = None

    def matches(self, line: LogLine) -> bool:
        if line.level < self.min_level:
            return False
        if self.trace_id and line.trace_id != self.trace_id:
            return False
        if self.start_time is not None and line.time < self.start_time:
            return False
        if self.end_time is not None and line.time >= self.end_time:
            return False
        if self.query:
            needle = self.query.lower()
            if needle not in line.message.lower() and not (
                line.fields and needle in json.dumps(line.fields, ensure_ascii=False, default=str).lower()
            ):
                return False
        return True


class Subscriber:
    """One live reader: a bounded queue that drops its oldest line when full and counts what it dropped."""

    def __init__(self, log_filter: LogFilter, size: int):
        self.filter = log_filter
        self.size = size
        self.queue: deque[LogLine] = deque()
        self.dropped = 0
        self.closed = False
        self._wakeup = asyncio.Event()

    def offer(self, line: LogLine) -> None:
        if not self.filter.matches(line):
            return
        if len(self.queue) >= self.size:
            self.queue.popleft()
            self.dropped += 1
            DROPPED.inc()
        self.queue.append(line)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def get(self) -> tuple[LogLine, int] | None:
        """The next line and how many matching lines were dropped before it; None once closed."""
        while not self.queue:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        line = self.queue.popleft()
        dropped, self.dropped = self.dropped, 0
        return line, dropped


class LogFiles:
    """JSON-lines files with size-based rotation. Thread-safe; called from worker threads, never the event loop."""

    def __init__(self, directory: Path, max_bytes: int, count: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self.count = count
        self._lock = DirLock(directory)  # several processes may share the directory (loghistory.py)

    @property
    def current(self) -> Path:
        return self.directory / LOG_FILE

    def _rotated(self, n: int) -> Path:
        return self.directory / f"{LOG_FILE}.{n}"

    def files_newest_first(self) -> list[Path]:
        files = [self.current]
        n = 1
        while self._rotated(n).exists():
            files.append(self._rotated(n))
            n += 1
        return [f for f in files if f.exists()]

    def append(self, lines: list[str]) -> None:
        """Append lines, rotating whenever the next line would take the current file past max_bytes."""
        with self._lock:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                size = self.current.stat().st_size
            except FileNotFoundError:
                size = 0
            pending: list[bytes] = []
            for text in lines:
                data = text.encode() + b"\n"
                if size and size + len(data) > self.max_bytes:
                    self._write(pending)
                    pending = []
                    self._rotate()
                    size = 0
                pending.append(data)
                size += len(data)
            self._write(pending)

    def _write(self, chunks: list[bytes]) -> None:
        if chunks:
            fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as handle:
                handle.write(b"".join(chunks))

    def _rotate(self) -> None:
        n = 1
        while self._rotated(n).exists():
            n += 1
        for i in range(n - 1, 0, -1):  # .k -> .k+1, dropping what falls beyond `count`
            if i >= self.count:
                self._rotated(i).unlink(missing_ok=True)
            else:
                os.replace(self._rotated(i), self._rotated(i + 1))
        if self.count >= 1:
            os.replace(self.current, self._rotated(1))
        else:
            self.current.unlink(missing_ok=True)

    def newest_first(self) -> Iterator[LogLine]:
        for path in self.files_newest_first():
            try:
                raw = path.read_bytes()
            except FileNotFoundError:  # rotated away while reading
                continue
            for text in reversed(raw.splitlines()):
                line = LogLine.from_json(text)
                if line is not None:
                    yield line

    def redact_once(self) -> int:
        """Redact every history line written before redaction existed; returns how many lines changed."""
        marker = self.directory.with_name(self.directory.name + REDACTED_MARKER)  # beside: the dir holds history only
        with self._lock:
            if marker.exists():
                return 0
            changed = 0
            for path in self.files_newest_first():
                raw = path.read_bytes().splitlines()
                clean = [_redacted_line(text) for text in raw]
                if clean != raw:
                    changed += sum(1 for a, b in zip(raw, clean, strict=True) if a != b)
                    tmp = path.with_name(path.name + ".tmp")
                    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                        handle.write(b"".join(t + b"\n" for t in clean))
                    os.replace(tmp, path)
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
            return changed

    def last_seq(self) -> int:
        return next((line.seq for line in self.newest_first()), 0)

    def clear(self, before: float | None) -> int:
        with self._lock:
            deleted = 0
            for path in self.files_newest_first():
                raw = path.read_bytes().splitlines()
                lines = [LogLine.from_json(t) for t in raw]
                if before is None:
                    deleted += sum(1 for line in lines if line is not None)
                    path.unlink(missing_ok=True)
                    continue
                keep = [t for t, line in zip(raw, lines, strict=True) if line is not None and line.time >= before]
                deleted += sum(1 for line in lines if line is not None) - len(keep)
                if len(keep) != len(raw):
                    tmp = path.with_name(path.name + ".tmp")
                    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                        handle.write(b"".join(t + b"\n" for t in keep))
                    os.replace(tmp, path)
            return deleted


class LogHub:
    def __init__(
        self,
        files: LogFiles,
        *,
        subscriber_queue: int = 1000,
        flush_seconds: float = 0.5,
        capture_level: str = "INFO",
        replay_max_lines: int = 10_000,
    ):
        self.files = files
        self.subscriber_queue = subscriber_queue
        self.flush_seconds = flush_seconds
        self.capture_level = capture_level
        self.replay_max_lines = replay_max_lines
        self.seq = 0
        self._pending: list[LogLine] = []
        self._subscribers: set[Subscriber] = set()
        self._flusher: asyncio.Task | None = None
        self._handler: _CaptureHandler | None = None
        self._flush_lock = asyncio.Lock()
        self.shipper: LogShipper | None = None  # set before start() to stream every process's lines
        self.history: HistoryWriter | None = None  # with the shipper: one writer of the history per data dir
        self._published = 0  # the last seq this process published on the shipper's channel

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.files.redact_once)
        self.seq = await asyncio.to_thread(self.files.last_seq)
        if self.shipper is not None:
            await self.shipper.start(self.seq)
        self._flusher = asyncio.create_task(self._flush_forever(), name="log-flusher")
        self._handler = _CaptureHandler(self, asyncio.get_running_loop(), self.capture_level)
        logging.getLogger().addHandler(self._handler)

    async def stop(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        for subscriber in list(self._subscribers):
            subscriber.close()
        await cancel_and_wait(self._flusher)
        self._flusher = None
        try:  # the last lines go through the shared store: a stop must not wait on it for ever
            async with asyncio.timeout(STOP_FLUSH_SECONDS):
                await self.flush()
                if self.history is not None:
                    await self.history.flush(everything=True)
        except TimeoutError:
            logging.getLogger("typecase.admin").warning(
                "log stream: the last lines were not shared within %s s of stopping", STOP_FLUSH_SECONDS
            )
        if self.history is not None:
            self.history.close()
        if self.shipper is not None:
            await self.shipper.stop()

    # -- publishing (event loop thread) -----------------------------------------------------------------------
    def publish(
        self,
        level: int,
        logger: str,
        message: str,
        trace_id: str = "",
        fields: dict[str, Any] | None = None,
        when: float | None = None,
    ) -> LogLine:
        shared = self.shipper is not None
        if not shared:
            self.seq += 1
        line = LogLine(
            0 if shared else self.seq,  # shared: numbered when shipped
            when or time.time(),
            level,
            logger,
            redact(message),
            trace_id,
            _redacted_fields(fields) if fields else {},
        )
        self._pending.append(line)
        if not shared:
            self._offer(line)
        return line

    def _offer(self, line: LogLine) -> None:
        for subscriber in self._subscribers:
            subscriber.offer(line)

    def deliver(self, texts: list[str]) -> None:
        """Lines of every process, from the shipper's channel."""
        if self.history is not None:
            self.history.received(texts)
        if self._subscribers:
            for text in texts:
                line = LogLine.from_json(text)
                if line is not None:
                    self._offer(line)

    async def _number(self, batch: list[LogLine]) -> tuple[list[str], bool]:
        """Shared: seq numbers from the cluster counter, then publish; locally numbered while the cache is down.
        Also tells whether the lines were published."""
        try:
            first = await cast(LogShipper, self.shipper).numbers(len(batch))
        except Exception as exc:
            print(f"typecase: cannot number log lines in the cache, numbering them here: {exc}", flush=True)
            first = None
        if first is None:
            for line in batch:
                self.seq += 1
                line.seq = self.seq
                self._offer(line)
            return [line.to_json() for line in batch], False
        for i, line in enumerate(batch):
            line.seq = first + i
        self.seq = max(self.seq, batch[-1].seq)
        texts = [line.to_json() for line in batch]
        try:
            await cast(LogShipper, self.shipper).publish(texts)
        except Exception as exc:
            print(f"typecase: cannot publish log lines to the cache: {exc}", flush=True)
            for line in batch:
                self._offer(line)
            return texts, False
        self._published = batch[-1].seq
        return texts, True

    def subscribe(self, log_filter: LogFilter) -> Subscriber:
        subscriber = Subscriber(log_filter, self.subscriber_queue)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    # -- history ----------------------------------------------------------------------------------------------
    async def flush(self) -> None:
        async with self._flush_lock:  # batches reach the file in seq order
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            texts, published = await self._number(batch) if self.shipper else ([x.to_json() for x in batch], False)
            if not published or self.history is None:  # else the history's writer appends them (loghistory.py)
                await asyncio.to_thread(self.files.append, texts)

    async def _settled(self) -> None:
        """Flushed, and (shared) the lines every process had numbered are in the history (or the wait is over)."""
        await self.flush()
        if self.history is not None and self.shipper is not None:
            try:
                target = max(self._published, await self.shipper.last())
            except Exception:  # the cache is away: this process's own lines
                target = self._published
            await self.history.caught_up(target)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
                if self.history is not None:
                    await self.history.flush()
            except OSError as exc:  # disk full, permissions: keep serving; say so on stderr only (no recursion)
                print(f"typecase: cannot write log history: {exc}", flush=True)

    async def query(
        self, log_filter: LogFilter, limit: int, before_seq: int | None = None
    ) -> tuple[list[LogLine], bool]:
        """Up to `limit` matching lines, newest first, with seq below `before_seq`; and whether more exist."""
        await self._settled()

        def scan() -> tuple[list[LogLine], bool]:
            found: list[LogLine] = []
            for line in self.files.newest_first():
                if before_seq is not None and line.seq >= before_seq:
                    continue
                if log_filter.start_time is not None and line.time < log_filter.start_time:
                    continue  # (files are in time order, but clocks may step: keep scanning)
                if log_filter.matches(line):
                    if len(found) == limit:
                        return found, True
                    found.append(line)
            return found, False

        return await asyncio.to_thread(scan)

    async def replay(self, log_filter: LogFilter, after_seq: int, tail: int) -> tuple[list[LogLine], int]:
        """Retained matching lines to send before live ones, oldest first, and how many were skipped because
        of `replay_max_lines`."""
        await self._settled()
        cap = min(tail, self.replay_max_lines) if after_seq <= 0 else self.replay_max_lines

        def scan() -> tuple[list[LogLine], int]:
            found: list[LogLine] = []
            skipped = 0
            for line in self.files.newest_first():
                if after_seq > 0 and line.seq <= after_seq:
                    break
                if not log_filter.matches(line):
                    continue
                if len(found) < cap:
                    found.append(line)
                elif after_seq > 0:
                    skipped += 1
                else:
                    break
            found.reverse()
            return found, skipped

        return await asyncio.to_thread(scan)

    async def clear(self, before: float | None) -> int:
        await self._settled()
        return await asyncio.to_thread(self.files.clear, before)


class _CaptureHandler(logging.Handler):
    """Feeds the server's own log records into the hub, from any thread."""

    def __init__(self, hub: LogHub, loop: asyncio.AbstractEventLoop, level: str):
        super().__init__(level)
        self.hub = hub
        self.loop = loop
        self.loop_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            trace = getattr(record, "trace_id", None) or trace_id_var.get()
            fields: dict[str, Any] = {}
            if record.exc_info:
                fields["exception"] = logging.Formatter().formatException(record.exc_info)
            args = (
                level_of(record.levelno),
                record.name,
                record.getMessage(),
                "" if trace == "-" else trace,
                fields,
                record.created,
            )
            if threading.get_ident() == self.loop_thread:
                self.hub.publish(*args)
            elif not self.loop.is_closed():
                self.loop.call_soon_threadsafe(lambda: self.hub.publish(*args))
        except Exception:  # a log line must never break the caller
            self.handleError(record)
