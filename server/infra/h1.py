"""A lean HTTP/1.1 client for the LLM streaming path: one asyncio Protocol per connection, the response parsed by
httptools (llhttp, uvicorn's parser), a small keep-alive pool.

Why not AiohttpTransport (typecase.server.infra.http): measured against a local fake upstream, aiohttp's client
spent ~320 us from request to the first body bytes where this design spends ~150 us, and that difference lands
on the time to first token of every stream. It is deliberately narrow: bytes request bodies, no redirects,
cookies, proxies or decompression; the request goes out as given (the caller's headers in order, plus host and
content-length only). Errors are httpx's exceptions with AiohttpTransport's mapping.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache
from urllib.parse import urlsplit

import httptools
import httpx

from .http import RawResponse

# Unread body bytes a connection buffers before it stops reading the socket (TCP then pushes back on the server).
MAX_BUFFER = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "DELETE"})

_Key = tuple[str, str, int]  # (scheme, host, port): what a pooled connection can serve


@lru_cache(maxsize=512)
def _target(url: str) -> tuple[_Key, bytes, bytes]:
    """(pool key, host header, request target) of an absolute URL; cached: a provider posts to a handful."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"cannot stream from {url!r}: an absolute http(s) URL is needed")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise httpx.InvalidURL(str(exc)) from None
    host = parts.hostname
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets in the host header
    authority = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
    path = parts.path or "/"  # sent as given: no requoting
    if parts.query:
        path += "?" + parts.query
    return (scheme, host, port), authority.encode("idna"), path.encode("ascii")


class _Connection(asyncio.Protocol):
    """One connection and the exchange in flight on it. Parser callbacks fill the response state and wake the one
    waiting reader directly from data_received: the first body bytes reach the consumer on the next loop turn."""

    def __init__(self, client: StreamClient, key: _Key):
        self.client = client
        self.key = key
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.active = False  # an exchange is in flight (data while idle is a protocol violation)
        self.idle_since = 0.0
        self.expiry: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._deadline = 0.0  # of the read in progress (wait_until); its timer moves lazily
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.cancel_timer()
        self.received = False  # any response byte: a request is never retried after one
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = False
        self.done = False
        self.keep_alive = False
        self.error: httpx.HTTPError | None = None
        self.retryable = False
        self.chunks: list[bytes] = []
        self.buffered = 0

    # ---------------------------------------------------------------------------------------- asyncio Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small SSE writes must not wait for ACKs

    def data_received(self, data: bytes) -> None:
        if not self.active or self.done:  # nothing (more) was asked: the connection cannot be trusted any more
            self.transport.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response from the upstream: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.active and not self.done and self.error is None:
            if not self.head:
                if not self.received:
                    self.retryable = True  # the server never answered: on a reused connection, it never saw it
                if exc is not None:
                    self._fail(httpx.WriteError(str(exc) or type(exc).__name__))
                else:
                    self._fail(httpx.RemoteProtocolError("server disconnected without a response"))
            elif exc is None and self._close_delimited():
                self.done = True  # a body without length or chunking ends with the connection
                self._wake()
            else:
                self._fail(httpx.ReadError(str(exc) if exc is not None and str(exc) else "response body broken off"))
        self.client._forget(self)

    # ---------------------------------------------------------------------------------------- parser callbacks

    def on_status(self, status: bytes) -> None:
        self.reason += status  # llhttp may hand it over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status >= 200:  # an interim 1xx is skipped: its message completes and the real one follows
            self.head = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > MAX_BUFFER and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head:  # the end of a 1xx
            self.reason, self.headers = b"", []
            return
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside this callback
        self._wake()

    # ---------------------------------------------------------------------------------------- exchange

    def _fail(self, error: httpx.HTTPError) -> None:
        self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close_delimited(self) -> bool:
        if self.status in (204, 304):
            return False
        for name, value in self.headers:
            name = name.lower()
            if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    async def wait(self, read_timeout: float | None) -> None:
        """Until the parser or the connection has news. Raises ReadTimeout after `read_timeout` seconds."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        if read_timeout is None:
            await waiter
            return
        try:
            async with asyncio.timeout(read_timeout):
                await waiter
        except TimeoutError:
            raise httpx.ReadTimeout("no data from the upstream within the read timeout") from None

    async def wait_until(self, deadline: float) -> None:
        """wait(), with TimeoutError at `deadline` (loop time). One timer per exchange, armed on the first wait and
        moved only when it fires early: an idle deadline moves on every token, and asyncio.timeout() per read
        (a timer, a task cancel and uncancel) was one of the largest costs per token of a stream."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
        await waiter

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:  # the deadline moved on since the timer was set
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        self._waiter = None
        waiter.set_exception(TimeoutError())

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take(self) -> bytes:
        """Everything buffered, at once; reading resumes once the consumer has drained the buffer."""
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self._paused:
            self._paused = False
            if not self.lost:
                self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def start(self, request: bytes) -> None:
        self._reset()
        self.active = True
        if self.lost or self.transport.is_closing():  # closed by the server since the pool checked it
            self.retryable = True
            self.error = httpx.WriteError("the connection closed before the request was sent")
            return
        self.transport.write(request)

    def reusable(self) -> bool:
        return (
            self.done
            and not self.chunks
            and self.error is None
            and not self.lost
            and not self.transport.is_closing()
            and self.keep_alive
        )

    def close(self) -> None:
        self.active = False
        self.cancel_timer()
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.transport is not None:
            self.transport.close()


class Body(httpx.AsyncByteStream):
    """The response body as it arrives (everything buffered per step); aclose() ends the exchange: the connection
    goes back to the pool if the body was read to its end, otherwise it is closed."""

    def __init__(self, client: StreamClient, conn: _Connection, read_timeout: float | None):
        self._client = client
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                if conn.chunks:
                    yield conn.take()
                    if self._conn is not conn:  # aclose()d meanwhile: the connection may serve another exchange
                        return
                elif conn.done:
                    break
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait(self._read_timeout)
        except BaseException:  # broken off, timed out, cancelled or abandoned (GeneratorExit): never reused
            self._end(reuse=False)
            raise
        self._end(reuse=True)

    async def read(self, deadline: float | None = None) -> bytes:
        """The next bytes of the body (everything buffered), b"" at its end; TimeoutError at `deadline` (loop time).
        What __aiter__ yields, without its async generator (and, with a deadline, a timer) per read."""
        conn = self._conn
        if conn is None:
            return b""
        try:
            while True:
                if conn.chunks:
                    return conn.take()
                if conn.done:
                    break
                if conn.error is not None:
                    raise conn.error
                if deadline is None:
                    await conn.wait(self._read_timeout)
                else:
                    await conn.wait_until(deadline)
        except BaseException:  # as in __aiter__: never reused
            self._end(reuse=False)
            raise
        self._end(reuse=True)
        return b""

    def _end(self, reuse: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.cancel_timer()
            self._client._release(conn, reuse and conn.reusable())

    async def aclose(self) -> None:
        self._end(reuse=True)  # reused only if read to its end (_Connection.reusable)


class StreamClient:
    """HTTP/1.1 exchanges with bytes bodies, the response body streamed. `max_connections` open connections at most
    (None or 0: unbounded); idle ones are closed after `keepalive_expiry` seconds (None: kept until the server
    closes them). TLS verification follows httpx's defaults (certifi, SSL_CERT_FILE / SSL_CERT_DIR)."""

    def __init__(self, *, max_connections: int | None = 100, keepalive_expiry: float | None = 5.0, verify: bool = True):
        self._max = max_connections or 0
        self._expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # made on the first https connection (loading CAs takes ~10 ms)
        self._open: set[_Connection] = set()
        self._idle: dict[_Key, list[_Connection]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    async def send(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes | None,
        timeout: dict[str, float | None],
    ) -> RawResponse:
        """One exchange; returns once the response head arrived. Raises httpx's exceptions."""
        key, authority, target = _target(str(url))
        request = self._request(method, authority, target, headers, content)
        read_timeout = timeout.get("read")
        for attempt in (0, 1):
            conn, reused = await self._acquire(key, timeout)
            try:
                conn.start(request)
                while not conn.head:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(read_timeout)
            except httpx.TransportError:
                self._release(conn, False)
                if reused and conn.retryable and attempt == 0:
                    continue  # an idle connection the server had closed: it never saw this request
                raise
            except BaseException:  # cancelled or timed out while waiting: the exchange is abandoned
                self._release(conn, False)
                raise
            return RawResponse(conn.status, conn.reason.decode("latin-1"), conn.headers, Body(self, conn, read_timeout))
        raise AssertionError("unreachable")

    @staticmethod
    def _request(
        method: str, authority: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], content: bytes | None
    ) -> bytes:
        lines = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)]
        has_host = has_length = False
        for name, value in headers:
            if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value or b":" in name:
                raise httpx.LocalProtocolError(f"invalid header {name!r}")
            lowered = name.lower()
            has_host = has_host or lowered == b"host"
            has_length = has_length or lowered in (b"content-length", b"transfer-encoding")
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_host:
            lines.insert(1, b"host: %s\r\n" % authority)
        if not has_length and (content or method.upper() not in _BODYLESS_METHODS):
            lines.append(b"content-length: %d\r\n" % len(content or b""))
        lines.append(b"\r\n")
        if content:
            lines.append(content)
        return b"".join(lines)

    # ---------------------------------------------------------------------------------------- pool

    async def _acquire(self, key: _Key, timeout: dict[str, float | None]) -> tuple[_Connection, bool]:
        """An idle connection to `key` (reused=True), or a new one once the pool has room."""
        if self._closed:
            raise httpx.ConnectError("the stream client is closed")
        loop = asyncio.get_running_loop()
        pool_timeout = timeout["pool"] if "pool" in timeout else timeout.get("connect")
        deadline = None if pool_timeout is None else loop.time() + pool_timeout
        while True:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to have been closed by the server
                if conn.expiry is not None:
                    conn.expiry.cancel()
                    conn.expiry = None
                if (
                    conn.lost
                    or conn.transport.is_closing()
                    or (self._expiry is not None and loop.time() - conn.idle_since > self._expiry)
                ):
                    self._release(conn, False)
                    continue
                return conn, True
            if not self._max or len(self._open) < self._max:
                return await self._connect(key, timeout.get("connect")), False
            if oldest := min(
                (c for conns in self._idle.values() for c in conns), key=lambda c: c.idle_since, default=None
            ):
                self._release(oldest, False)  # an idle connection to another host makes room
                continue
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection within the pool timeout") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_waiter()  # the slot we were given passes to the next in line
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, key: _Key, connect_timeout: float | None) -> _Connection:
        scheme, host, port = key
        conn = _Connection(self, key)
        self._open.add(conn)  # counted while connecting, so max_connections holds
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            self._forget(conn)
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {connect_timeout:g}s") from None
        except OSError as exc:  # refused, unresolvable, TLS handshake failed (ssl.SSLError is an OSError)
            self._forget(conn)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._forget(conn)
            raise
        if self._closed:  # closed while this connection was being made
            self._release(conn, False)
            raise httpx.ConnectError("the stream client is closed")
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self._verify)
        return self._ssl

    def _release(self, conn: _Connection, reuse: bool) -> None:
        """Ends the exchange on `conn`: back to the idle pool, or closed."""
        conn.active = False
        if reuse and not self._closed and self._expiry != 0:
            loop = asyncio.get_running_loop()
            conn.idle_since = loop.time()
            if self._expiry is not None:
                conn.expiry = loop.call_later(self._expiry, self._release, conn, False)
            self._idle.setdefault(conn.key, []).append(conn)
            self._wake_waiter()
            return
        conn.close()
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        """`conn` is gone (closed by us or the server): its slot is free."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if conn.expiry is not None:
                conn.expiry.cancel()
                conn.expiry = None
        if conn in self._open:
            self._open.discard(conn)
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        """Closes every connection, idle or in use."""
        self._closed = True
        for conn in list(self._open):
            conn.close()
            self._forget(conn)
        self._idle.clear()
        await asyncio.sleep(0)  # lets the transports finish closing
