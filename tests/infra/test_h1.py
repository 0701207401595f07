"""The lean HTTP/1.1 streaming client (typecase.server.infra.h1) against real asyncio servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvloop

from typecase.server.infra.h1 import StreamClient

from .infra_support import free_port

TIMEOUT = {"connect": 2.0, "read": 5.0, "write": 2.0, "pool": 2.0}
SSE = [b'data: {"n":%d}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]


class Server:
    """An HTTP/1.1 server whose answer is the test's `respond(conn, request)`; it records every connection (its
    id, requests, and whether and how it ended) so the tests can see pooling from the server's side."""

    def __init__(self, respond: Callable[[Server.Conn, bytes], Awaitable[None]]):
        self.respond = respond
        self.conns: list[Server.Conn] = []
        self.server: asyncio.Server | None = None

    class Conn:
        def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            self.reader, self.writer = reader, writer
            self.requests: list[bytes] = []
            self.ended = asyncio.get_running_loop().create_future()  # set when the client closed (EOF/reset)

        def reset(self) -> None:
            """Close with RST instead of FIN."""
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.conns:
            conn.writer.transport.abort()
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Server.Conn(reader, writer)
        self.conns.append(conn)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                conn.requests.append(request)
                await self.respond(conn, request)
                if writer.transport.is_closing():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if not conn.ended.done():
                conn.ended.set_result(None)
            writer.transport.abort()


def ok(body: bytes, **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra.encode()) + body


async def answer(conn: Server.Conn, request: bytes) -> None:
    conn.writer.write(ok(b"hello " + request.split(b" ", 2)[1]))


@pytest.fixture
async def client() -> AsyncIterator[StreamClient]:
    c = StreamClient(max_connections=10, keepalive_expiry=5.0)
    yield c
    await c.aclose()


async def fetch(client: StreamClient, url: str, content: bytes = b"{}") -> tuple[int, bytes]:
    response = await client.send("POST", url, [(b"content-type", b"application/json")], content, TIMEOUT)
    try:
        return response.status, b"".join([chunk async for chunk in response.body])
    finally:
        await response.body.aclose()


async def test_chunked_sse_read_whole(client: StreamClient) -> None:
    async def sse(conn: Server.Conn, request: bytes) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in SSE:
            conn.writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await conn.writer.drain()
            await asyncio.sleep(0.01)
        conn.writer.write(b"0\r\n\r\n")

    async with Server(sse) as server:
        response = await client.send(
            "POST",
            server.url + "/v1/chat/completions?x=%2F",
            [(b"accept", b"text/event-stream"), (b"x-dup", b"1"), (b"x-dup", b"2")],
            b'{"stream":true}',
            TIMEOUT,
        )
        assert (response.status, response.reason) == (200, "OK")
        assert response.header(b"content-type") == b"text/event-stream"
        chunks = [chunk async for chunk in response.body]
        await response.body.aclose()
        assert b"".join(chunks) == b"".join(SSE)
        assert len(chunks) > 1  # handed over as they arrived, not at the end
        request = server.conns[0].requests[0]
        port = server.url.rsplit(":", 1)[1]
        # Sent as given: path unquoted, the caller's headers in order (duplicates kept), nothing else added.
        assert request == (
            b"POST /v1/chat/completions?x=%2F HTTP/1.1\r\nhost: 127.0.0.1:"
            + port.encode()
            + b"\r\naccept: text/event-stream\r\nx-dup: 1\r\nx-dup: 2\r\ncontent-length: 15\r\n\r\n"
            b'{"stream":true}'
        )


async def test_content_length_body_and_keepalive_reuse(client: StreamClient) -> None:
    async with Server(answer) as server:
        assert await fetch(client, server.url + "/a") == (200, b"hello /a")
        assert await fetch(client, server.url + "/b") == (200, b"hello /b")
        assert len(server.conns) == 1 and len(server.conns[0].requests) == 2


async def test_close_delimited_body(client: StreamClient) -> None:
    async def close_delimited(conn: Server.Conn, request: bytes) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await conn.writer.drain()
        await asyncio.sleep(0.02)
        conn.writer.write(b"part two")
        conn.writer.close()

    async with Server(close_delimited) as server:
        assert await fetch(client, server.url) == (200, b"part one, part two")
        assert await fetch(client, server.url) == (200, b"part one, part two")
        assert len(server.conns) == 2  # never pooled: the body ended with its connection


async def test_connection_close_header_not_pooled(client: StreamClient) -> None:
    async def once(conn: Server.Conn, request: bytes) -> None:
        conn.writer.write(ok(b"bye", connection="close"))

    async with Server(once) as server:
        assert await fetch(client, server.url) == (200, b"bye")
        assert await fetch(client, server.url) == (200, b"bye")
        assert len(server.conns) == 2


async def test_idle_connection_closed_by_server_is_replaced(client: StreamClient) -> None:
    async with Server(answer) as server:
        assert await fetch(client, server.url + "/a") == (200, b"hello /a")
        server.conns[0].writer.close()  # the server's keep-alive timeout, while the connection sits in the pool
        await server.conns[0].ended
        await asyncio.sleep(0.05)
        assert await fetch(client, server.url + "/b") == (200, b"hello /b")
        assert len(server.conns) == 2 and server.conns[1].requests[0].startswith(b"POST /b ")


async def test_reused_connection_closed_before_answering_is_retried(client: StreamClient) -> None:
    async def race(conn: Server.Conn, request: bytes) -> None:
        if conn is server.conns[0] and len(conn.requests) == 2:
            conn.writer.close()  # closed as the request arrived: it was never processed
            return
        await answer(conn, request)

    async with Server(race) as server:
        assert await fetch(client, server.url + "/a") == (200, b"hello /a")
        assert await fetch(client, server.url + "/b") == (200, b"hello /b")
        assert [len(c.requests) for c in server.conns] == [2, 1]


async def test_fresh_connection_closed_without_answer_is_not_retried(client: StreamClient) -> None:
    async def hang_up(conn: Server.Conn, request: bytes) -> None:
        conn.writer.close()

    async with Server(hang_up) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without a response"):
            await fetch(client, server.url)
        assert len(server.conns) == 1


async def test_abandoned_body_closes_connection(client: StreamClient) -> None:
    async def endless(conn: Server.Conn, request: bytes) -> None:
        if conn is server.conns[0]:
            conn.writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await conn.reader.read()  # until the client goes away
            raise ConnectionError
        await answer(conn, request)

    async with Server(endless) as server:
        response = await client.send("POST", server.url, [], b"{}", TIMEOUT)
        assert await anext(aiter(response.body)) == b"first"
        await response.body.aclose()
        await asyncio.wait_for(server.conns[0].ended, 10)  # the server saw the connection end
        assert await fetch(client, server.url + "/next") == (200, b"hello /next")
        assert len(server.conns) == 2


async def test_cancelled_read_closes_connection(client: StreamClient) -> None:
    async def stall(conn: Server.Conn, request: bytes) -> None:
        if conn is server.conns[0]:
            conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            await conn.reader.read()
            raise ConnectionError
        await answer(conn, request)

    async with Server(stall) as server:
        response = await client.send("POST", server.url, [], b"{}", {**TIMEOUT, "read": None})
        body = aiter(response.body)
        assert await anext(body) == b"abc"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # the LLM path's own deadlines work like this
                await anext(body)
        await asyncio.wait_for(server.conns[0].ended, 10)  # closed by the cancellation itself, before aclose()
        await response.body.aclose()
        assert await fetch(client, server.url + "/next") == (200, b"hello /next")
        assert len(server.conns) == 2


async def test_read_timeout(client: StreamClient) -> None:
    async def silent(conn: Server.Conn, request: bytes) -> None:
        await conn.reader.read()

    async with Server(silent) as server:
        with pytest.raises(httpx.ReadTimeout):
            await client.send("POST", server.url, [], b"{}", {**TIMEOUT, "read": 0.1})


@pytest.mark.parametrize("how", ["reset", "eof"])
async def test_broken_off_mid_body_is_read_error(client: StreamClient, how: str) -> None:
    async def broken(conn: Server.Conn, request: bytes) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await conn.writer.drain()
        await asyncio.sleep(0.05)
        conn.reset() if how == "reset" else conn.writer.close()

    async with Server(broken) as server:
        response = await client.send("POST", server.url, [], b"{}", TIMEOUT)
        received = b""
        with pytest.raises(httpx.ReadError):
            async for chunk in response.body:
                received += chunk
        assert received == b"partial"
        await response.body.aclose()


async def test_refused_port_is_connect_error(client: StreamClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.send("POST", f"http://127.0.0.1:{free_port()}/", [], b"{}", TIMEOUT)


async def test_malformed_status_line_is_protocol_error(client: StreamClient) -> None:
    async def garbage(conn: Server.Conn, request: bytes) -> None:
        conn.writer.write(b"HTTP/1.1 OK-ISH\r\n\r\n")

    async with Server(garbage) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.send("POST", server.url, [], b"{}", TIMEOUT)


async def test_max_connections_waits_for_a_free_one() -> None:
    client = StreamClient(max_connections=1, keepalive_expiry=5.0)
    try:
        async with Server(answer) as server:
            first = await client.send("POST", server.url + "/a", [], b"{}", TIMEOUT)
            with pytest.raises(httpx.PoolTimeout):
                await client.send("POST", server.url + "/b", [], b"{}", {**TIMEOUT, "pool": 0.1})
            second = asyncio.create_task(fetch(client, server.url + "/c"))
            await asyncio.sleep(0.05)
            assert not second.done()
            assert b"".join([chunk async for chunk in first.body]) == b"hello /a"
            await first.body.aclose()
            assert await second == (200, b"hello /c")
            assert len(server.conns) == 1
    finally:
        await client.aclose()


async def test_slow_consumer_pauses_reading(client: StreamClient) -> None:
    size = 16 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async def big(conn: Server.Conn, request: bytes) -> None:
        conn.writer.write(ok(payload))

    async with Server(big) as server:
        response = await client.send("POST", server.url, [], b"{}", TIMEOUT)
        await asyncio.sleep(0.3)  # the consumer reads nothing for a while
        transport = server.conns[0].writer.transport
        assert transport.get_write_buffer_size() > size // 2  # the client stopped reading: it backs up server-side
        received = bytearray()
        async for chunk in response.body:
            received += chunk
            assert len(chunk) <= 2 * 1024 * 1024  # never much more than the buffer limit held at once
        assert bytes(received) == payload
        assert transport.get_write_buffer_size() == 0


SCENARIOS = [
    test_chunked_sse_read_whole,
    test_content_length_body_and_keepalive_reuse,
    test_close_delimited_body,
    test_idle_connection_closed_by_server_is_replaced,
    test_reused_connection_closed_before_answering_is_retried,
    test_fresh_connection_closed_without_answer_is_not_retried,
    test_abandoned_body_closes_connection,
    test_cancelled_read_closes_connection,
    test_refused_port_is_connect_error,
    test_malformed_status_line_is_protocol_error,
    test_slow_consumer_pauses_reading,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("test_"))
def test_under_uvloop(scenario: Callable[[StreamClient], Awaitable[None]]) -> None:
    """The server runs on uvloop (transports differ in when they report EOF, pause and close): the same
    scenarios there, each on a uvloop of its own in a worker thread."""

    async def run() -> None:
        client = StreamClient(max_connections=10, keepalive_expiry=5.0)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(uvloop.run, run()).result()
