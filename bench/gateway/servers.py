"""Benchmark servers, one per process: ``python servers.py KIND PORT [GRPC_PORT] GEN_DIR``.

KIND: grpc | inprocess (gateway, InProcess target) | channel (gateway in front of GRPC_PORT) | bare
(a plain Starlette app doing the same work: parse JSON, build the reply / the stream items, dump JSON).
"""

from __future__ import annotations

import asyncio
import json
import sys


def load(gen_dir: str):
    sys.path.insert(0, gen_dir)
    from gwbench.v1 import bench_pb2, bench_pb2_grpc

    return bench_pb2, bench_pb2_grpc


def servicer(pb2, pb2_grpc):
    class Bench(pb2_grpc.BenchServicer):
        async def Echo(self, request, context):
            return pb2.EchoReply(text=request.text, n=request.n)

        async def Stream(self, request, context):
            Tick = pb2.Tick
            for i in range(request.count):
                yield Tick(seq=i + 1, text="tick")

    return Bench()


def bare_app():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(request: Request):
        body = await request.json()
        return JSONResponse({"text": body.get("text", ""), "n": body.get("n", 0)})

    async def stream(request: Request):
        count = int(request.query_params.get("count", "0"))
        sse = "text/event-stream" in request.headers.get("accept", "")

        async def gen():
            dumps = json.dumps
            for i in range(count):
                item = {"seq": str(i + 1), "text": "tick"}
                if sse:
                    yield f"id: {i + 1}\ndata: {dumps(item)}\n\n"
                else:
                    yield dumps({"result": item}) + "\n"

        return StreamingResponse(gen(), media_type="text/event-stream" if sse else "application/x-ndjson")

    async def ws(websocket: WebSocket):
        await websocket.accept()
        first = json.loads(await websocket.receive_text())
        dumps = json.dumps
        for i in range(int(first.get("count", 0))):
            await websocket.send_text(dumps({"seq": str(i + 1), "text": "tick"}))
        await websocket.close()

    return Starlette(
        routes=[
            Route("/v1/echo", echo, methods=["POST"]),
            Route("/v1/stream", stream),
            WebSocketRoute("/v1/stream", ws),
        ]
    )


async def run_grpc(port: int, pb2, pb2_grpc) -> None:
    import grpc

    server = grpc.aio.server()
    pb2_grpc.add_BenchServicer_to_server(servicer(pb2, pb2_grpc), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    gen_dir = sys.argv[-1]
    pb2, pb2_grpc = load(gen_dir)
    if kind == "grpc":
        asyncio.run(run_grpc(port, pb2, pb2_grpc))
        return
    import uvicorn

    if kind == "bare":
        app = bare_app()
    else:
        import grpc

        from typecase.server.gateway import InProcess, create_app

        services = [pb2.DESCRIPTOR.services_by_name["Bench"]]
        if kind == "inprocess":
            target = InProcess()
            pb2_grpc.add_BenchServicer_to_server(servicer(pb2, pb2_grpc), target)
            app = create_app(target, services)
        else:
            channel_holder: dict = {}

            # The channel must be created inside uvicorn's loop: build the app lazily.
            class Lazy:
                def __init__(self):
                    self.app = None

                async def __call__(self, scope, receive, send):
                    if self.app is None:
                        channel_holder["ch"] = grpc.aio.insecure_channel(f"127.0.0.1:{int(sys.argv[3])}")
                        self.app = create_app(channel_holder["ch"], services)
                    await self.app(scope, receive, send)

            app = Lazy()
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="off", ws="websockets-sansio"
    )


if __name__ == "__main__":
    main()
