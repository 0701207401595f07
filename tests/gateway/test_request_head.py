"""Request-head caps (server/infra/request_head.py, used by the gateway and proxy listeners) at their limits: a real
uvicorn server on a loopback port, raw sockets (an HTTP client would refuse to send most of this)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
import uvicorn

from typecase.server.infra.request_head import WIRE_SLACK_BYTES, limited_http_protocol

MAX_BYTES, MAX_COUNT = 1024, 10


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    body = b"%d headers" % len(scope["headers"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, http=limited_http_protocol(MAX_BYTES, MAX_COUNT)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    await task


def head(target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"GET %s HTTP/1.1\r\n" % target + b"".join(b"%s: %s\r\n" % h for h in headers) + b"\r\n"


def sized_headers(total: int) -> list[tuple[bytes, bytes]]:
    """Host plus one header, `total` bytes as counted with the target "/" (name + value + 4 per header)."""
    value = b"v" * (total - len(b"/") - (len(b"host") + len(b"x") + 4) - (len(b"x-fill") + 4))
    return [(b"host", b"x"), (b"x-fill", value)]


async def status_of(port: int, *parts: bytes, pause: float = 0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.readline())
    try:
        for part in parts:
            if answer.done():  # answered (and closed) before the head was finished
                break
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        return await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize(("count", "status"), [(MAX_COUNT, b"200"), (MAX_COUNT + 1, b"431")])
async def test_header_count_at_the_cap_passes_and_one_more_is_431(port, count, status):
    headers = [(b"host", b"x")] + [(b"x-h%d" % i, b"v") for i in range(count - 1)]
    assert (await status_of(port, head(b"/", headers))).split(b" ")[1] == status


@pytest.mark.parametrize(("size", "status"), [(MAX_BYTES, b"200"), (MAX_BYTES + 1, b"431")])
async def test_head_size_at_the_cap_passes_and_one_byte_more_is_431(port, size, status):
    assert (await status_of(port, head(b"/", sized_headers(size)))).split(b" ")[1] == status


async def test_a_head_that_keeps_coming_is_cut_off_before_it_ends(port):
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: "
    pieces = [start] + [b"z" * 512] * ((MAX_BYTES + WIRE_SLACK_BYTES) // 512 + 2)
    assert await status_of(port, *pieces, pause=0.005) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


async def test_each_request_on_a_kept_alive_connection_gets_its_own_budget(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):  # three requests of nearly the whole budget each, on one connection
            writer.write(head(b"/", sized_headers(MAX_BYTES)))
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
            while (await reader.readline()) != b"\r\n":
                pass
            await reader.readexactly(len(b"2 headers"))
    finally:
        writer.close()
