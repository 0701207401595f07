"""The upstream connection pool: httpx transports over httpcore, tuned for a proxy's per-request cost.

Two measured problems of the stock setup, and what this module does about them (see bench/proxy):
- httpcore's pool does O(connections) work on every request and response close (it checks each pooled
  connection, with a readability syscall per idle one), so at 200 concurrent streams one pool of 200 connections
  cost ~14 ms of CPU per request. The pool is split into `shards` independent pools used in turn.
- httpcore reaches asyncio through anyio, which opens a cancel scope around every socket read and write. Here an
  asyncio Protocol serves reads and writes directly, with timeouts as plain timer callbacks, and a request's
  head and body leave in one send instead of two or three (socket sends were a third of the proxy's CPU). It
  also answers
  httpcore's "is this idle connection readable?" from state it already has (data or EOF arrived) instead of a
  syscall. Reading pauses when its buffer is full, so a slow client slows the upstream (TCP backpressure) rather
  than growing memory.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import ssl
import typing

import httpcore
import httpx

READ_BUFFER_HIGH = 256 * 1024  # pause reading from the upstream above this many unread bytes
WRITE_COALESCE_MAX = 64 * 1024  # send at once when this much is queued


class _Stream(asyncio.Protocol, httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None
        self._paused_reading = False
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_BUFFER_HIGH and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._eof = True
        self._error = exc
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- httpcore.AsyncNetworkStream ---------------------------------------------------------------------------
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        if not self._buffer and not self._eof:
            self._waiter = self._loop.create_future()
            try:
                await _wait(self._waiter, timeout, httpcore.ReadTimeout)
            finally:
                self._waiter = None
        if not self._buffer:
            if self._error is not None:
                raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
            return b""
        data = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        if self._paused_reading and len(self._buffer) < READ_BUFFER_HIGH // 4:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Queue the bytes; they leave in one send when httpcore next reads (it always reads after sending a
        request) or at the end of this event-loop turn, so a request's head and body cost one syscall."""
        if not buffer:
            return
        if self.transport is None or self.transport.is_closing():
            raise httpcore.WriteError("connection closed")
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(buffer)
        if sum(map(len, self._pending)) >= WRITE_COALESCE_MAX:
            self._flush()
        if self._drain is not None:
            await _wait(self._drain, timeout, httpcore.WriteTimeout)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    async def aclose(self) -> None:
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            self.transport = await asyncio.wait_for(
                self._loop.start_tls(self.transport, self, ssl_context, server_hostname=server_hostname), timeout)
        except TimeoutError as exc:
            self.transport.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            self.transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":  # idle connection: the server sent something (EOF, error) or closed it
            return bool(self._buffer) or self._eof
        if info == "ssl_object":
            return self.transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self.transport.get_extra_info("sockname")
        if info == "server_addr":
            return self.transport.get_extra_info("peername")
        if info == "socket":
            return self.transport.get_extra_info("socket")
        return None


async def _wait(future: asyncio.Future, timeout: float | None, error: type[Exception]) -> None:
    if timeout is None:
        await future
        return
    handle = asyncio.get_running_loop().call_later(
        timeout, lambda: future.done() or future.set_exception(error(f"no progress in {timeout:g}s")))
    try:
        await future
    finally:
        handle.cancel()


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            _, stream = await asyncio.wait_for(
                loop.create_connection(_Stream, host, port,
                                       local_addr=(local_address, 0) if local_address else None), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock: socket.socket | None = stream.transport.get_extra_info("socket")
        for option in socket_options or ():
            if sock is not None:
                sock.setsockopt(*option)
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            _, stream = await asyncio.wait_for(loop.create_unix_connection(_Stream, path), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connect to {path} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class UpstreamPool(httpx.AsyncBaseTransport):
    """`shards` httpx transports (each its own httpcore pool on the asyncio backend), used round-robin. The
    connection limits are totals, divided among the shards."""

    def __init__(self, limits: httpx.Limits, shards: int = 8):
        shards = max(1, min(shards, limits.max_connections or shards))
        per = httpx.Limits(
            max_connections=math.ceil(limits.max_connections / shards) if limits.max_connections else None,
            max_keepalive_connections=(math.ceil(limits.max_keepalive_connections / shards)
                                       if limits.max_keepalive_connections is not None else None),
            keepalive_expiry=limits.keepalive_expiry,
        )
        backend = AsyncioBackend()
        self._transports = []
        for _ in range(shards):
            transport = httpx.AsyncHTTPTransport(limits=per, retries=0)
            old = transport._pool  # httpx 0.28 builds its pool without a network_backend option
            transport._pool = httpcore.AsyncConnectionPool(
                ssl_context=old._ssl_context,
                max_connections=per.max_connections,
                max_keepalive_connections=per.max_keepalive_connections,
                keepalive_expiry=per.keepalive_expiry,
                retries=0,
                network_backend=backend,
            )
            self._transports.append(transport)
        self._next = itertools.cycle(self._transports).__next__

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._next().handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.aclose()
