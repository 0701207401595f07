"""Bare relays with none of Typecase's code, the frameworks' own share of the added time to first token.

bench/llm/relay.py measures these beside Typecase, so its report can tell what gRPC (grpc.aio) and HTTP (uvicorn)
cost on their own on this machine from what Typecase's code adds on top:
  grpc   a grpc.aio server whose LLMService.Generate reads the upstream with a raw keep-alive HTTP/1.1 client and
         yields every read holding a token as one GenerateResponse (no auth, interceptors, parsing or limits)
  sse    a uvicorn ASGI app (httptools, uvloop, as `typecase serve`) relaying the same reads as server-sent events
  ws     the same app upgraded to a WebSocket (uvicorn's default implementation, as `typecase serve`): the first
         text frame is the request, each read holding a token goes out as one text frame, then a normal close

    python bench/llm/floor.py UPSTREAM_PORT GRPC_PORT HTTP_PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import uvicorn
import uvloop

from typecase.v1 import llm_pb2, llm_pb2_grpc

REQUEST = b'{"model":"bench","stream":true,"messages":[{"role":"user","content":"go"}]}'


class Upstream:
    """Keep-alive connections to the fake upstream; `stream()` yields the body reads of one streamed request."""

    def __init__(self, port: int):
        self.port = port
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(REQUEST)}\r\n\r\n"
        ).encode() + REQUEST
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def stream(self):
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(self.request)
        await reader.readuntil(b"\r\n\r\n")
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data
            if data.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end: the connection is reusable
                self.idle.append((reader, writer))
                return


class Relay(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self, upstream: Upstream):
        self.upstream = upstream

    async def Generate(self, request, context):
        seq = 0
        async for data in self.upstream.stream():
            if b"tok" in data:
                seq += 1
                yield llm_pb2.GenerateResponse(seq=seq, text=data.decode())


def sse_app(upstream: Upstream):
    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await websocket(receive, send)
            return
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        async for data in upstream.stream():
            await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def websocket(receive, send):
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        if (await receive())["type"] != "websocket.receive":  # the request frame
            return
        async for data in upstream.stream():
            if b"tok" in data:
                await send({"type": "websocket.send", "text": data.decode()})
        await send({"type": "websocket.close", "code": 1000})

    return app


async def main(upstream_port: int, grpc_port: int, http_port: int) -> None:
    upstream = Upstream(upstream_port)
    server = grpc.aio.server()
    llm_pb2_grpc.add_LLMServiceServicer_to_server(Relay(upstream), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    config = uvicorn.Config(
        sse_app(upstream),
        host="127.0.0.1",
        port=http_port,
        http="httptools",
        loop="none",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    await uvicorn.Server(config).serve()
    await server.stop(0)


if __name__ == "__main__":
    uvloop.run(main(*map(int, sys.argv[1:4])))
