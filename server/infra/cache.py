"""Cache and bus: key/values with TTL, counters, locks, pub/sub and append-only streams.

RedisCache shares state across replicas; MemoryCache (cache_memory.py) is the embedded single-process default with
the same semantics (values come back as bytes, TTLs in seconds with millisecond precision, stream ids "ms-seq").
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo

from .urls import error_detail, mask_url

log = logging.getLogger(__name__)

Value = bytes | str | int | float
StreamEntry = tuple[str, dict[str, bytes]]
Message = tuple[str, bytes]
EventRecord = tuple[str, int, bytes, bool, float | None]  # stream, seq, payload, terminal, ttl: Cache.xadd_events
T = TypeVar("T")
P = ParamSpec("P")


REDIS_MAX_CONNECTIONS = 500
REDIS_POOL_WAIT_SECONDS = 10.0
# What each new connection tells Redis (CLIENT SETINFO), made once: redis-py reads its own package metadata again for
# every connection it opens otherwise (a pool growing under a burst of turns paid it dozens of times).
_DRIVER_INFO = DriverInfo()


class _Connection(aioredis.Connection):
    """redis-py's TCP connection, writing a command without asyncio.wait_for when the socket takes it at once.

    With a socket timeout (redis-py's default is 5 s) every command's write is `wait_for(writelines + drain)`, and
    wait_for makes a Task of it on Python 3.11: about a quarter of the client CPU of a small command here. The
    write itself never blocks; only a drain past the transport's high-water mark can wait, and that one still runs
    under the timeout, as do the same errors as redis-py's own path."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._writer is None or not self.socket_timeout or isinstance(command, str | bytes):
            return await super().send_packed_command(command, check_health)
        if check_health:
            await self.check_health()
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            return await super().send_packed_command(command, check_health=False)
        try:
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                await asyncio.wait_for(writer.drain(), self.socket_timeout)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise redis_errors.TimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            raise redis_errors.ConnectionError(f"Error {error_detail(e)} while writing to socket.") from e
        except BaseException:
            await self.disconnect(nowait=True)
            raise


class _Pool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, handing out an idle connection at once when nobody waits for one: its own path takes
    the pool's Condition, an asyncio.timeout and a context manager per command (~25 us of client CPU here). With no
    idle connection, callers waiting, or the pool in maintenance mode, redis-py's path runs as it is."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        waiters = getattr(self._condition, "_waiters", None)
        if self._in_maintenance or not self._available_connections or waiters or args or kwargs:
            return await super().get_connection(*args, **kwargs)
        connection = self._available_connections.pop()  # no await since the check: nothing interleaves
        self._in_use_connections.add(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


def redis_pool(
    url: str, max_connections: int = REDIS_MAX_CONNECTIONS, retries: int = 3, **connection_kwargs: Any
) -> aioredis.BlockingConnectionPool:
    """The connection pool of each of our Redis clients. When every connection is busy, a caller waits (up to
    REDIS_POOL_WAIT_SECONDS) for one instead of failing at once, as redis-py's default pool does past 100.
    Commands retry a few times on connection errors, so that the first command on a connection Redis closed (a
    restart, a failover) reconnects instead of failing; beyond that callers get the error at once."""
    pool = _Pool.from_url(
        url,
        max_connections=max_connections,
        timeout=REDIS_POOL_WAIT_SECONDS,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
        driver_info=_DRIVER_INFO,
        **connection_kwargs,
    )
    if pool.connection_class is aioredis.Connection:  # TCP without TLS (rediss:// and unix:// keep theirs)
        pool.connection_class = _Connection
    return pool


def redis_client(url: str, max_connections: int = REDIS_MAX_CONNECTIONS) -> aioredis.Redis:
    return aioredis.Redis(connection_pool=redis_pool(url, max_connections, socket_connect_timeout=5))


def limits_storage(redis_url: str | None, key_prefix: str, max_connections: int = REDIS_MAX_CONNECTIONS):
    """A `limits` storage: Redis, so that every replica counts against one limit, or this process's memory."""
    from limits.aio.storage import RedisStorage

    if not redis_url:
        return _memory_limits_storage()
    scheme, sep, rest = redis_url.partition("://")
    return RedisStorage(
        f"async+{scheme}{sep}{rest}",
        implementation="redispy",
        key_prefix=key_prefix,
        connection_pool=redis_pool(redis_url, max_connections),  # type: ignore[arg-type]  # passed on to redis-py
    )


def _memory_limits_storage():
    """limits' in-process storage with its expiry sweep done inline (rate_windows.py: why)."""
    from .rate_windows import InlineSweepMemoryStorage

    return InlineSweepMemoryStorage()


class CacheUnavailable(ConnectionError):
    """The cache backend cannot be reached; callers may retry later."""

    backend = "Redis"


def _encode(value: Value) -> bytes:
    # Same encoding as redis-py so both implementations return identical bytes.
    if isinstance(value, bool):
        raise TypeError("bool is ambiguous as a cache value; encode it explicitly")
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"unsupported cache value type {type(value).__name__}")


def _ms(ttl: float) -> int:
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    return max(1, int(ttl * 1000))


def _glob_escape(text: str) -> str:
    """`text` matched literally in a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Cache(abc.ABC):
    """The cache/bus interface. TTLs are seconds (float); `None` means no expiry."""

    name: str

    async def start(self) -> None:
        """Connect and verify the backend is reachable (raises CacheUnavailable otherwise)."""

    async def stop(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def health(self) -> tuple[bool, str]: ...

    def redis_key(self, key: str) -> str | None:
        """The name `key` has on the Redis server, for a script that reads it along with its own keys (the same
        server every Redis-backed piece uses: resources.py); None when the cache is not Redis."""
        return None

    # key/value
    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: Value, ttl: float | None = None) -> None: ...

    @abc.abstractmethod
    async def set_if_absent(self, key: str, value: Value, ttl: float | None = None) -> bool:
        """Set only when the key does not exist (lock acquisition); True when this call set it."""

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int:
        """Delete keys of any type (values, counters, streams); returns how many existed."""

    @abc.abstractmethod
    async def delete_if_equals(self, key: str, value: Value) -> bool:
        """Delete the key only while it still holds `value` (releasing a lock you own)."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add to an integer counter; `ttl` is applied when the counter has no expiry yet (i.e. on creation)."""

    @abc.abstractmethod
    async def expire(self, key: str, ttl: float) -> bool:
        """Set a TTL on an existing key of any type (streams too); False when the key does not exist."""

    @abc.abstractmethod
    async def values_under(self, prefix: str) -> dict[str, bytes]:
        """Every live value whose key starts with `prefix` (keys without our namespace). For small families of
        keys written by each process (one per worker), not for scanning a large keyspace."""

    # pub/sub (fire and forget: only current subscribers receive a message)
    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes | str) -> int:
        """Returns how many subscribers received it."""

    @abc.abstractmethod
    def subscribe(self, *channels: str) -> AbstractAsyncContextManager[AsyncIterator[Message]]:
        """`async with cache.subscribe("a") as messages: async for channel, data in messages: ...`.

        The subscription is active when the block is entered, so a publish issued afterwards is delivered.
        """

    # streams (durable, replayable event logs)
    @abc.abstractmethod
    async def xadd(self, stream: str, fields: dict[str, str | bytes], maxlen: int | None = None) -> str:
        """Append an entry; returns its id. `maxlen` trims the oldest entries beyond that length."""

    async def xadd_many(self, entries: list[tuple[str, dict[str, str | bytes], float | None]]) -> None:
        """Append (stream, fields, ttl) entries in list order, in one round trip where the backend allows; a
        stream whose ttl is given expires that long after this write."""
        for stream, fields, ttl in entries:
            await self.xadd(stream, fields)
            if ttl is not None:
                await self.expire(stream, ttl)

    async def xadd_events(self, entries: list[EventRecord]) -> None:
        """Append event-log entries (stream, seq, payload, terminal, ttl) as xadd_many would the fields {s: seq,
        m: payload, t: "1" on a terminal entry} (eventlog.py's layout); RedisCache sends them in a denser form."""
        await self.xadd_many(
            [
                (stream, {"s": str(seq), "m": payload, "t": "1"} if terminal else {"s": str(seq), "m": payload}, ttl)
                for stream, seq, payload, terminal, ttl in entries
            ]
        )

    @abc.abstractmethod
    async def xrange(self, stream: str, after_id: str | None = None, count: int | None = None) -> list[StreamEntry]:
        """Entries with id > after_id (from the start when None), oldest first."""

    @abc.abstractmethod
    async def xread(
        self, stream: str, after_id: str = "$", block_ms: int | None = None, count: int | None = None
    ) -> list[StreamEntry]:
        """Entries with id > after_id; when none, wait up to block_ms (0 = forever, None = don't wait).

        after_id "$" means "only entries added from now on".
        """

    @abc.abstractmethod
    async def delete_stream(self, stream: str) -> bool: ...


# --------------------------------------------------------------------------------------------------- Redis


def _redis_errors(
    fn: Callable[Concatenate[RedisCache, P], Awaitable[T]],
) -> Callable[Concatenate[RedisCache, P], Coroutine[Any, Any, T]]:
    """Surface connection failures as CacheUnavailable (redis-py already retried and will reconnect)."""

    @wraps(fn)
    async def wrapper(self: RedisCache, *args: P.args, **kw: P.kwargs) -> T:
        try:
            return await fn(self, *args, **kw)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise CacheUnavailable(f"redis at {self.display_url} unavailable: {error_detail(exc)}") from exc

    return wrapper


# Atomic compound operations (a crash between two commands must not leave a counter without its TTL).
_INCR_LUA = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""
_DELETE_IF_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Appends a batch of stream entries in one command. KEYS: one stream per entry. ARGV, per entry: its TTL in ms (-1:
# none), how many field and value items follow, then those. Measured: a third of the client CPU per entry of the
# pipeline of XADD (and PEXPIRE) commands it replaces, which redis-py packs and parses one command at a time.
_XADD_MANY_LUA = """
local i = 1
for k = 1, #KEYS do
  local ttl = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  redis.call('XADD', KEYS[k], '*', unpack(ARGV, i + 2, i + 1 + n))
  if ttl >= 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
  i = i + 2 + n
end
return #KEYS
"""

# Event-log entries (Cache.xadd_events), stored as xadd_many stores {s, m[, t]}, in two arguments besides the keys
# whatever the batch's size: ARGV[1] "seq ttl terminal length" per entry (ttl in ms, -1: none; terminal 1 or 0), comma
# separated; ARGV[2] the payloads end to end, cut apart here. redis-py packs each argument in Python: with seven per
# entry (xadd_many's form) a batch of 50 cost ~6 us of client CPU per entry, ~2 in this one.
_XADD_EVENTS_LUA = """
local k, pos, payloads = 0, 1, ARGV[2]
for seq, ttl, terminal, length in string.gmatch(ARGV[1], '(%d+) (%-?%d+) (%d) (%d+)') do
  k = k + 1
  local stop = pos + tonumber(length)
  local m = string.sub(payloads, pos, stop - 1)
  pos = stop
  if terminal == '1' then
    redis.call('XADD', KEYS[k], '*', 's', seq, 'm', m, 't', '1')
  else
    redis.call('XADD', KEYS[k], '*', 's', seq, 'm', m)
  end
  if ttl ~= '-1' then redis.call('PEXPIRE', KEYS[k], ttl) end
end
return k
"""


class RedisCache(Cache):
    """Redis (or a compatible server). Every key, channel and stream is namespaced by `key_prefix`."""

    def __init__(
        self,
        url: str,
        key_prefix: str = "typecase:",
        *,
        connect_timeout: float = 5,
        retries: int = 3,
        client_name: str = "typecase",  # shows in CLIENT LIST, so operators can tell our connections apart
        max_connections: int = REDIS_MAX_CONNECTIONS,
    ):
        self.display_url = mask_url(url)
        self.prefix = key_prefix
        self.name = "cache/redis"
        # No socket read timeout: blocking XREADs legitimately wait; keepalive + health checks catch dead peers.
        # Any: redis-py types every reply as bytes | str | Awaitable, whatever decode_responses says.
        self._client: Any = aioredis.Redis(
            connection_pool=redis_pool(
                url,
                max_connections,
                retries,
                socket_connect_timeout=connect_timeout,
                socket_keepalive=True,
                health_check_interval=30,
                client_name=client_name,
            )
        )
        self._incr = self._client.register_script(_INCR_LUA)
        self._delete_if = self._client.register_script(_DELETE_IF_LUA)
        self._xadd_many = self._client.register_script(_XADD_MANY_LUA)
        self._xadd_events = self._client.register_script(_XADD_EVENTS_LUA)

    def __repr__(self) -> str:
        return f"RedisCache({self.display_url!r}, key_prefix={self.prefix!r})"

    def _k(self, key: str) -> str:
        return self.prefix + key

    def redis_key(self, key: str) -> str | None:
        return self.prefix + key

    @_redis_errors
    async def start(self) -> None:
        await self._client.ping()
        log.info("cache connected: %s", self.display_url)

    async def stop(self) -> None:
        await self._client.aclose()

    async def health(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(3):
                await self._client.ping()
            return True, "redis ok"
        except Exception as exc:
            return False, f"redis unreachable: {error_detail(exc)}"

    @_redis_errors
    async def get(self, key: str) -> bytes | None:
        return await self._client.get(self._k(key))

    @_redis_errors
    async def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        await self._client.set(self._k(key), _encode(value), px=_ms(ttl) if ttl is not None else None)

    @_redis_errors
    async def set_if_absent(self, key: str, value: Value, ttl: float | None = None) -> bool:
        px = _ms(ttl) if ttl is not None else None
        return bool(await self._client.set(self._k(key), _encode(value), px=px, nx=True))

    @_redis_errors
    async def delete(self, *keys: str) -> int:
        return int(await self._client.delete(*map(self._k, keys))) if keys else 0

    @_redis_errors
    async def delete_if_equals(self, key: str, value: Value) -> bool:
        return bool(await self._delete_if(keys=[self._k(key)], args=[_encode(value)]))

    @_redis_errors
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        try:
            return int(await self._incr(keys=[self._k(key)], args=[amount, _ms(ttl) if ttl is not None else ""]))
        except redis_errors.ResponseError as exc:
            raise ValueError(f"key {key!r} does not hold an integer: {exc}") from None

    @_redis_errors
    async def expire(self, key: str, ttl: float) -> bool:
        return bool(await self._client.pexpire(self._k(key), _ms(ttl)))

    @_redis_errors
    async def values_under(self, prefix: str) -> dict[str, bytes]:
        keys = [key async for key in self._client.scan_iter(match=_glob_escape(self._k(prefix)) + "*", count=1000)]
        if not keys:
            return {}
        values = await self._client.mget(keys)
        cut = len(self.prefix)
        return {k.decode()[cut:]: v for k, v in zip(keys, values, strict=True) if isinstance(v, bytes)}

    @_redis_errors
    async def publish(self, channel: str, data: bytes | str) -> int:
        return int(await self._client.publish(self._k(channel), _encode(data)))

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[Message]]:
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        pubsub = self._client.pubsub()
        try:
            try:
                await pubsub.subscribe(*map(self._k, channels))
                early = await self._await_confirmations(pubsub, len(set(channels)))
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                raise CacheUnavailable(f"redis at {self.display_url} unavailable: {error_detail(exc)}") from exc
            yield _RedisSubscription(pubsub, len(self.prefix), early, self.display_url)
        finally:
            try:
                await pubsub.aclose()
            except Exception:  # the connection may already be gone
                pass

    @staticmethod
    async def _await_confirmations(pubsub: Any, expected: int) -> list[tuple[bytes, bytes]]:
        # Wait until Redis acknowledged every channel; messages that race ahead are kept for the iterator.
        early: list[tuple[bytes, bytes]] = []
        confirmed = 0
        async with asyncio.timeout(10):
            while confirmed < expected:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                if msg["type"] == "subscribe":
                    confirmed += 1
                elif msg["type"] == "message":
                    early.append((msg["channel"], msg["data"]))
        return early

    @_redis_errors
    async def xadd(self, stream: str, fields: dict[str, str | bytes], maxlen: int | None = None) -> str:
        encoded = {k: _encode(v) for k, v in fields.items()}
        entry_id = await self._client.xadd(self._k(stream), encoded, maxlen=maxlen, approximate=False)
        return entry_id.decode()

    @_redis_errors
    async def xadd_many(self, entries: list[tuple[str, dict[str, str | bytes], float | None]]) -> None:
        if not entries:
            return
        keys: list[str] = []
        args: list[bytes | int | str] = []
        for stream, fields, ttl in entries:
            keys.append(self._k(stream))
            args += (-1 if ttl is None else _ms(ttl), 2 * len(fields))
            for name, value in fields.items():
                args += (name, _encode(value))
        await self._xadd_many(keys=keys, args=args)

    @_redis_errors
    async def xadd_events(self, entries: list[EventRecord]) -> None:
        if not entries:
            return
        prefix = self.prefix
        keys = [prefix + stream for stream, *_ in entries]
        meta = ",".join(
            [
                f"{seq} {-1 if ttl is None else _ms(ttl)} {1 if terminal else 0} {len(payload)}"
                for _, seq, payload, terminal, ttl in entries
            ]
        )
        await self._xadd_events(keys=keys, args=[meta, b"".join([payload for _, _, payload, _, _ in entries])])

    @_redis_errors
    async def xrange(self, stream: str, after_id: str | None = None, count: int | None = None) -> list[StreamEntry]:
        start = "-" if after_id is None else f"({after_id}"
        return _decode_entries(await self._client.xrange(self._k(stream), start, "+", count=count))

    @_redis_errors
    async def xread(
        self, stream: str, after_id: str = "$", block_ms: int | None = None, count: int | None = None
    ) -> list[StreamEntry]:
        reply = await self._client.xread({self._k(stream): after_id}, count=count, block=block_ms)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3 shape: {stream: [entries]}
            entries = next(iter(reply.values()))
            entries = entries[0] if entries and isinstance(entries[0], list) else entries
        else:  # RESP2 shape: [[stream, entries]]
            entries = reply[0][1]
        return _decode_entries(entries)

    @_redis_errors
    async def delete_stream(self, stream: str) -> bool:
        return bool(await self._client.delete(self._k(stream)))


def _decode_entries(entries: list[Any]) -> list[StreamEntry]:
    return [
        (eid.decode() if isinstance(eid, bytes) else eid, {k.decode(): v for k, v in fields.items()})
        for eid, fields in entries
    ]


class _RedisSubscription:
    def __init__(self, pubsub: Any, prefix_len: int, early: list[tuple[bytes, bytes]], display_url: str):
        self._pubsub = pubsub
        self._prefix_len = prefix_len
        self._early = deque(early)
        self._display_url = display_url

    def __aiter__(self) -> _RedisSubscription:
        return self

    async def __anext__(self) -> Message:
        if self._early:
            channel, data = self._early.popleft()
            return channel.decode()[self._prefix_len :], data
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=None)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                raise CacheUnavailable(f"redis at {self._display_url} unavailable: {error_detail(exc)}") from exc
            if msg is not None and msg["type"] == "message":
                return msg["channel"].decode()[self._prefix_len :], msg["data"]


def create_cache(
    redis_url: str | None,
    key_prefix: str = "typecase:",
    max_connections: int = REDIS_MAX_CONNECTIONS,
    streams_file: Path | None = None,
) -> Cache:
    """Redis when a URL is configured, else the in-process cache; with `streams_file`, the in-process cache keeps
    its streams (event logs) in that SQLite file across restarts (infra/journal.py)."""
    if redis_url:
        return RedisCache(redis_url, key_prefix=key_prefix, max_connections=max_connections)
    if streams_file is not None:
        from .journal import JournaledMemoryCache  # it builds on MemoryCache (cache_memory.py)

        return JournaledMemoryCache(streams_file)
    from .cache_memory import MemoryCache  # it builds on Cache, defined above

    return MemoryCache()


async def listen_forever(
    cache: Cache, channel: str, on_message: Callable[[str], None], ready: asyncio.Event, name: str
) -> None:
    """Deliver every message of `channel` (decoded) to `on_message` until cancelled, re-subscribing with backoff when
    the bus drops; `ready` is set while subscribed, so callers can wait until a publish will be seen."""
    delay = 0.1
    while True:
        try:
            async with cache.subscribe(channel) as messages:
                ready.set()
                delay = 0.1
                async for _, data in messages:
                    on_message(data.decode() if isinstance(data, bytes) else data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ready.clear()
            log.warning("%s: lost its subscription to %s (%s); retrying in %.1fs", name, channel, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
