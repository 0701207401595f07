"""Streams of the in-process cache that outlive the process: embedded mode's event logs (chat turns, flow runs)
kept in a SQLite file in the data dir, so that a reader who reloads after a crash and restart replays the whole
history (with Redis, the streams live in Redis and this is not used).

JournaledMemoryCache is the MemoryCache whose stream writes go to the file first, then to memory: an entry is
readable (and so delivered) only once it is committed, the rule "a replica delivers an event only after it is in
the shared log". Reads are served from memory as before; the file is read once, at start. Expiry is kept as wall
time, so TTLs run on across restarts; expired streams are purged from the file at start and every
PURGE_EVERY_SECONDS.

The file is written by one thread of its own: SQLite releases the GIL while it works, and the event loop never
waits on the disk. That matters: SQLite checkpoints its WAL into the database file every ~4 MB of log and fsyncs,
and commits measured inline on the loop stalled up to 64 ms behind one (p99.9 18 ms); on the thread, only the
appends queued meanwhile wait (they go in the next transaction together). A checkpoint on a second thread instead
never caught up with a writer that does not pause (the WAL grew to 440 MB). WAL with synchronous=NORMAL: a commit
survives the process being killed (it is in the OS's page cache), not a power loss, which is what the embedded
mode promises. Measured (bench/chat/bench_eventlog*.py, docs/deploy.md): about 13 us more CPU per appended
event than the in-memory log; through whole chat turns, 4-16 % more server CPU per token and 3 ms on the p99 gap.

Only streams are kept: values, counters and pub/sub stay in memory (stop signals and locks of a dead process
must not come back)."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .cache_memory import MemoryCache, _Item, _Stream

PURGE_EVERY_SECONDS = 5.0
PURGE_STREAMS = 200  # expired streams deleted per purge transaction, so that appends never wait long behind one
WAL_LIMIT_BYTES = 16 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint
_KEY_LEN = struct.Struct(">H")
_VALUE_LEN = struct.Struct(">I")
# Streams get integer ids: an index on an integer costs appends half what an index on the key text did.
SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, expires_at REAL);
CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, stream INTEGER NOT NULL, fields BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ix_entries_stream ON entries (stream);
"""


def encode_fields(fields: Mapping[str, str | bytes]) -> bytes:
    parts = []
    for name, value in fields.items():
        raw = name.encode()
        data = value.encode() if isinstance(value, str) else value
        parts += [_KEY_LEN.pack(len(raw)), raw, _VALUE_LEN.pack(len(data)), data]
    return b"".join(parts)


def decode_fields(blob: bytes) -> dict[str, bytes]:
    fields, at = {}, 0
    while at < len(blob):
        (size,) = _KEY_LEN.unpack_from(blob, at)
        name = blob[at + 2 : at + 2 + size].decode()
        at += 2 + size
        (size,) = _VALUE_LEN.unpack_from(blob, at)
        fields[name] = blob[at + 4 : at + 4 + size]
        at += 4 + size
    return fields


class StreamFile:
    """The SQLite file. Every method runs on the writer thread, which alone touches `ids`."""

    def __init__(self, path: Path):
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.ids: dict[str, int] = {}  # stream key -> id, for the streams in the file
        self.next_id = 1
        self.next_purge = 0.0

    def open(self) -> dict[str, tuple[list[dict[str, bytes]], float | None]]:
        """Open (create) the file, drop what expired, and return every stream: key -> (entries, expires_at)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self.db.executescript(SCHEMA)
        while self.purge():
            pass
        streams: dict[str, tuple[list[dict[str, bytes]], float | None]] = {}
        by_id: dict[int, str] = {}
        for stream_id, key, expires_at in self.db.execute("SELECT id, key, expires_at FROM streams"):
            self.ids[key], by_id[stream_id], streams[key] = stream_id, key, ([], expires_at)
            self.next_id = max(self.next_id, stream_id + 1)
        for stream_id, blob in self.db.execute("SELECT stream, fields FROM entries ORDER BY id"):
            if stream_id in by_id:
                streams[by_id[stream_id]][0].append(decode_fields(blob))
        return streams

    def close(self) -> None:
        if self.db is not None:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()
            self.db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN ... COMMIT (the connection is in autocommit mode: without this, every statement commits)."""
        assert self.db is not None
        self.db.execute("BEGIN")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _drop(self, db: sqlite3.Connection, stream_ids: list[int]) -> None:
        db.executemany("DELETE FROM entries WHERE stream = ?", [(i,) for i in stream_ids])
        db.executemany("DELETE FROM streams WHERE id = ?", [(i,) for i in stream_ids])

    def purge(self) -> bool:
        """Delete up to PURGE_STREAMS expired streams; True when there may be more."""
        assert self.db is not None
        expired = self.db.execute(
            "SELECT id, key FROM streams WHERE expires_at <= ? LIMIT ?", (time.time(), PURGE_STREAMS)
        ).fetchall()
        if expired:
            with self.transaction() as db:
                self._drop(db, [stream_id for stream_id, _ in expired])
            for stream_id, key in expired:
                if self.ids.get(key) == stream_id:
                    del self.ids[key]
        more = len(expired) == PURGE_STREAMS
        self.next_purge = time.monotonic() + (0 if more else PURGE_EVERY_SECONDS)
        return more

    def append(
        self,
        fresh: list[str],
        rows: list[tuple[str, bytes]],
        expiries: dict[str, float],
        maxlen: tuple[str, int] | None = None,
    ) -> None:
        """One transaction: `fresh` streams start empty (replacing what an expired one left under the key), the
        rows (key, encoded fields) are appended in order, then the expiries (key -> wall time) are set."""
        with self.transaction() as db:
            for key in fresh:
                if key in self.ids:
                    self._drop(db, [self.ids[key]])
                self.ids[key] = self.next_id
                self.next_id += 1
                db.execute("INSERT INTO streams (id, key) VALUES (?, ?)", (self.ids[key], key))
            for key, _ in rows:
                if key not in self.ids:  # appended to a stream the file lost track of (purged meanwhile)
                    self.ids[key] = self.next_id
                    self.next_id += 1
                    db.execute("INSERT OR REPLACE INTO streams (id, key) VALUES (?, ?)", (self.ids[key], key))
            db.executemany(
                "INSERT INTO entries (stream, fields) VALUES (?, ?)", [(self.ids[key], blob) for key, blob in rows]
            )
            if expiries:
                db.executemany(
                    "UPDATE streams SET expires_at = ? WHERE id = ?",
                    [(at, self.ids[key]) for key, at in expiries.items()],
                )
            if maxlen is not None:
                stream_id = self.ids[maxlen[0]]
                db.execute(
                    "DELETE FROM entries WHERE stream = ? AND id NOT IN (SELECT id FROM entries WHERE "
                    "stream = ? ORDER BY id DESC LIMIT ?)",
                    (stream_id, stream_id, maxlen[1]),
                )
        if time.monotonic() >= self.next_purge:
            self.purge()

    def expire(self, key: str, expires_at: float) -> None:
        if key in self.ids:
            with self.transaction() as db:
                db.execute("UPDATE streams SET expires_at = ? WHERE id = ?", (expires_at, self.ids[key]))

    def delete(self, keys: list[str]) -> None:
        gone = [self.ids.pop(k) for k in keys if k in self.ids]
        if gone:
            with self.transaction() as db:
                self._drop(db, gone)


class JournaledMemoryCache(MemoryCache):
    """MemoryCache whose streams are kept in a SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.name = "cache/memory"  # the same resource to operators (readyz); its health detail names the file
        self.file = StreamFile(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-journal")

    def __repr__(self) -> str:
        return f"JournaledMemoryCache({str(self.file.path)!r})"

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def start(self) -> None:
        try:
            streams = await self._call(self.file.open)
        except sqlite3.Error as exc:
            raise RuntimeError(
                f"cannot open the event log file {self.file.path} ({exc}): move it away (ended turns and runs then "
                "replay from SQL) or set TYPECASE_EMBEDDED_EVENT_LOGS_DURABLE=false"
            ) from exc
        now_wall, now = time.time(), time.monotonic()
        for key, (entries, expires_at) in streams.items():
            stream = _Stream()
            for fields in entries:
                sid = self._next_id()
                stream.ids.append(sid)
                stream.entries.append((f"{sid[0]}-{sid[1]}", fields))
            self._items[key] = _Item(stream, None if expires_at is None else now + (expires_at - now_wall))

    async def stop(self) -> None:
        await super().stop()
        await self._call(self.file.close)
        self._thread.shutdown(wait=True)

    async def health(self) -> tuple[bool, str]:
        ok, detail = await super().health()
        return ok, f"{detail}, streams kept in {self.file.path}"

    def _is_stream(self, key: str) -> bool:
        item = self._live(key)
        return item is not None and isinstance(item.value, _Stream)

    @staticmethod
    def _wall(ttl: float) -> float:
        return time.time() + max(0.001, ttl)

    async def xadd(self, stream: str, fields: dict[str, str | bytes], maxlen: int | None = None) -> str:
        fresh = [] if self._is_stream(stream) else [stream]
        await self._call(
            self.file.append, fresh, [(stream, encode_fields(fields))], {}, None if maxlen is None else (stream, maxlen)
        )
        return await super().xadd(stream, fields, maxlen)

    async def xadd_many(self, entries: list[tuple[str, dict[str, str | bytes], float | None]]) -> None:
        fresh: dict[str, None] = {}
        rows, expiries = [], {}
        for stream, fields, ttl in entries:
            if stream not in fresh and not self._is_stream(stream):
                fresh[stream] = None
            rows.append((stream, encode_fields(fields)))
            if ttl is not None:
                expiries[stream] = self._wall(ttl)
        await self._call(self.file.append, list(fresh), rows, expiries)  # committed before anyone can read them
        for stream, fields, ttl in entries:
            await super().xadd(stream, fields)
            if ttl is not None:
                await super().expire(stream, ttl)

    async def expire(self, key: str, ttl: float) -> bool:
        stream = self._is_stream(key)
        done = await super().expire(key, ttl)
        if done and stream:
            await self._call(self.file.expire, key, self._wall(ttl))
        return done

    async def delete(self, *keys: str) -> int:
        streams = [k for k in keys if self._is_stream(k)]
        count = await super().delete(*keys)
        if streams:
            await self._call(self.file.delete, streams)
        return count

    async def delete_stream(self, stream: str) -> bool:
        return await self.delete(stream) == 1
