"""Streams of the in-process cache that outlive the process: embedded mode's event logs (chat turns, flow runs)
kept in a SQLite file in the data dir, so that a reader who reloads after a crash and restart replays the whole
history (with Redis, the streams live in Redis and this is not used).

JournaledMemoryCache is the MemoryCache whose stream writes go to the file first, then to memory: an entry is
readable (and so delivered) only once it is committed, the rule "a replica delivers an event only after it is in
the shared log". Reads are served from memory as before; the file is read once, at start. Expiry is kept as wall
time, so TTLs run on across restarts; expired streams are purged from the file at start and every
PURGE_EVERY_SECONDS.

The file is written by one thread of its own: SQLite releases the GIL while it works, the event loop never waits
on the disk (a WAL checkpoint fsyncs), and a batch of appends is one transaction. WAL with synchronous=NORMAL: a
commit survives the process being killed (it is in the OS's page cache), not a power loss, which is what the
embedded mode promises. Measured on the chat bench (500 concurrent turns of 50 tokens, embedded): see
docs/deploy.md and the report of issue 18.

Only streams are kept: values, counters and pub/sub stay in memory (stop signals and locks of a dead process
must not come back)."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cache import MemoryCache, _Item, _Stream

PURGE_EVERY_SECONDS = 60.0
_KEY_LEN = struct.Struct(">H")
_VALUE_LEN = struct.Struct(">I")
SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (key TEXT PRIMARY KEY, expires_at REAL);
CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, key TEXT NOT NULL, fields BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ix_entries_key_id ON entries (key, id);
"""


def encode_fields(fields: dict[str, bytes]) -> bytes:
    parts = []
    for name, value in fields.items():
        raw = name.encode()
        parts += [_KEY_LEN.pack(len(raw)), raw, _VALUE_LEN.pack(len(value)), value]
    return b"".join(parts)


def decode_fields(blob: bytes) -> dict[str, bytes]:
    fields, at = {}, 0
    while at < len(blob):
        (size,) = _KEY_LEN.unpack_from(blob, at)
        name = blob[at + 2:at + 2 + size].decode()
        at += 2 + size
        (size,) = _VALUE_LEN.unpack_from(blob, at)
        fields[name] = blob[at + 4:at + 4 + size]
        at += 4 + size
    return fields


class StreamFile:
    """The SQLite file; every method runs on the journal's own thread."""

    def __init__(self, path: Path):
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.next_purge = 0.0

    def open(self) -> dict[str, tuple[list[dict[str, bytes]], float | None]]:
        """Open (create) the file, drop what expired, and return every stream: key -> (entries, expires_at)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.purge()
        streams: dict[str, tuple[list[dict[str, bytes]], float | None]] = {
            key: ([], expires_at) for key, expires_at in self.db.execute("SELECT key, expires_at FROM streams")}
        for key, blob in self.db.execute("SELECT key, fields FROM entries ORDER BY id"):
            if key in streams:
                streams[key][0].append(decode_fields(blob))
        return streams

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def purge(self) -> None:
        assert self.db is not None
        now = time.time()
        with self.db:
            self.db.execute("DELETE FROM entries WHERE key IN (SELECT key FROM streams WHERE expires_at <= ?)", (now,))
            self.db.execute("DELETE FROM streams WHERE expires_at <= ?", (now,))
            self.db.execute("DELETE FROM entries WHERE key NOT IN (SELECT key FROM streams)")
        self.next_purge = time.monotonic() + PURGE_EVERY_SECONDS

    def append(self, rows: list[tuple[str, bool, bytes, float | None, int | None]]) -> None:
        """(key, new stream, encoded fields, expires_at or None to keep, maxlen) in one transaction. A new stream
        replaces whatever an expired one left under its key."""
        assert self.db is not None
        with self.db:
            for key, fresh, blob, expires_at, maxlen in rows:
                if fresh:
                    self.db.execute("DELETE FROM entries WHERE key = ?", (key,))
                    self.db.execute("INSERT OR REPLACE INTO streams (key, expires_at) VALUES (?, NULL)", (key,))
                self.db.execute("INSERT INTO entries (key, fields) VALUES (?, ?)", (key, blob))
                if expires_at is not None:
                    self.db.execute("UPDATE streams SET expires_at = ? WHERE key = ?", (expires_at, key))
                if maxlen is not None:
                    self.db.execute("DELETE FROM entries WHERE key = ? AND id NOT IN (SELECT id FROM entries "
                                    "WHERE key = ? ORDER BY id DESC LIMIT ?)", (key, key, maxlen))
        if time.monotonic() >= self.next_purge:
            self.purge()

    def expire(self, key: str, expires_at: float) -> None:
        assert self.db is not None
        with self.db:
            self.db.execute("UPDATE streams SET expires_at = ? WHERE key = ?", (expires_at, key))

    def delete(self, keys: list[str]) -> None:
        assert self.db is not None
        with self.db:
            self.db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in keys])
            self.db.executemany("DELETE FROM streams WHERE key = ?", [(k,) for k in keys])


class JournaledMemoryCache(MemoryCache):
    """MemoryCache whose streams are kept in a SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.name = "cache/memory+journal"
        self.file = StreamFile(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-journal")

    def __repr__(self) -> str:
        return f"JournaledMemoryCache({str(self.file.path)!r})"

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def start(self) -> None:
        streams = await self._call(self.file.open)
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
        encoded = {k: v.encode() if isinstance(v, str) else v for k, v in fields.items()}
        await self._call(self.file.append, [(stream, not self._is_stream(stream), encode_fields(encoded), None,
                                             maxlen)])
        return await super().xadd(stream, encoded, maxlen)

    async def xadd_many(self, entries: list[tuple[str, dict[str, str | bytes], float | None]]) -> None:
        rows, fresh = [], set()
        encoded_entries = []
        for stream, fields, ttl in entries:
            encoded = {k: v.encode() if isinstance(v, str) else v for k, v in fields.items()}
            new = stream not in fresh and not self._is_stream(stream)
            if new:
                fresh.add(stream)
            rows.append((stream, new, encode_fields(encoded), None if ttl is None else self._wall(ttl), None))
            encoded_entries.append((stream, encoded, ttl))
        await self._call(self.file.append, rows)  # committed before any reader can see the entries
        for stream, encoded, ttl in encoded_entries:
            await super().xadd(stream, encoded)
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
