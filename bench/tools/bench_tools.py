"""What Typecase adds to a tool call, and how fast the catalogue lists.

In one run, against the same real servers on loopback (the tests' MCP server over streamable HTTP, and the tests'
Starlette service with its OpenAPI document):
  - CallTool through Typecase (gRPC, in-process server: auth, lookup, schema validation, decryption of the
    provider's secrets, the SSRF-guarded client, metrics) against calling the same MCP tool with the official
    mcp client on one reused session, and the same OpenAPI operation with httpx: p50 of each and the added p50;
  - GetTool of the same tool, interleaved with the OpenAPI calls: the same RPC path (interceptors, auth, the tool's
    lookup) with no upstream call;
  - the floor: the same GetTool request and reply on a bare grpc.aio server in the same process (no interceptors,
    no auth, no lookup), also interleaved: what gRPC itself costs on this machine. Typecase's own share of an
    added p50 is what is above it;
  - ListTools of a catalogue of 1,000 tools (one page of 1,000 over gRPC): p50.

    .venv/bin/python bench/tools/bench_tools.py [--calls 300] [--lists 30]

Embedded resources (SQLite file, in-process cache) in a temporary data dir, like `typecase serve` unconfigured.

Client, server and direct calls share one event loop, so each timed call starts after a short settle
(SETTLE_SECONDS, untimed): the previous call's background work (the mcp SDK closes its POST's connection and
ends its tasks after the result is handed over, on the direct and on Typecase's session alike) runs there
instead of inside whichever call is timed next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
KEY = "bench-key-0123456789"
SETTLE_PASSES = int(os.environ.get("SETTLE_PASSES", "8"))


async def settle() -> None:
    """Let the loop run what is ready (untimed) before the next timed call."""
    for _ in range(SETTLE_PASSES):
        await asyncio.sleep(0)


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(fn, n: int) -> list[float]:
    return (await interleaved([fn], n))[0]


async def interleaved(fns, n: int) -> list[list[float]]:
    """n timings of each function, taken in turn (this machine's speed drifts: compared paths share the drift)."""
    for _ in range(min(20, n)):  # warm-up: connections, caches
        for fn in fns:
            await fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, times in zip(fns, out, strict=True):
            await settle()
            began = time.perf_counter()
            await fn()
            times.append(time.perf_counter() - began)
    return out


async def main(calls: int, lists: int) -> dict:
    import grpc
    import httpx
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from tests.conftest import ADMIN_KEY
    from tests.tools.servers import start, stop
    from typecase.server.app import App
    from typecase.server.config import Settings
    from typecase.v1 import tools_pb2, tools_pb2_grpc

    for name in list(os.environ):
        if name.startswith("TYPECASE_"):
            del os.environ[name]
    os.environ["HF_HUB_OFFLINE"] = "1"
    mcp_proc, mcp_port = start("tests.tools.mcp_server", "http", "{port}")
    svc_proc, svc_port = start("tests.tools.openapi_service", "{port}", KEY)
    data = tempfile.mkdtemp(prefix="tc-bench-tools-")
    app = App(
        Settings(
            _env_file=None,
            data_dir=Path(data),
            grpc_port=0,
            http_port=0,
            admin_api_key=ADMIN_KEY,
            flow_http_allowed_hosts=["127.0.0.1"],
            shutdown_grace_seconds=1,
            # the bench measures a call's overhead, not the per-key limit it would hit
            rate_limit_per_key="1000000/minute",
            rate_limit_per_user="1000000/minute",
        )
    )
    await app.start()
    md = (("authorization", f"Bearer {ADMIN_KEY}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = tools_pb2_grpc.ToolServiceStub(channel)
            mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
            mcp = (
                await stub.CreateToolProvider(
                    tools_pb2.CreateToolProviderRequest(
                        provider=tools_pb2.ToolProvider(
                            name="mcp", kind=tools_pb2.TOOL_PROVIDER_KIND_MCP, mcp=tools_pb2.McpServer(url=mcp_url)
                        )
                    ),
                    metadata=md,
                )
            ).provider
            api = (
                await stub.CreateToolProvider(
                    tools_pb2.CreateToolProviderRequest(
                        provider=tools_pb2.ToolProvider(
                            name="pets",
                            kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                            openapi=tools_pb2.OpenApiSource(
                                document_url=f"http://127.0.0.1:{svc_port}/openapi.json",
                                auth=tools_pb2.ToolAuth(
                                    type=tools_pb2.TOOL_AUTH_TYPE_API_KEY_HEADER, name="X-API-Key", credential=KEY
                                ),
                            ),
                        )
                    ),
                    metadata=md,
                )
            ).provider
            listed = await stub.ListTools(tools_pb2.ListToolsRequest(page_size=1000), metadata=md)
            add = next(t.id for t in listed.tools if t.provider_id == mcp.id and t.name == "add")
            get = next(t.id for t in listed.tools if t.provider_id == api.id and t.name == "getPet")

            async def via_typecase_mcp():
                reply = await stub.CallTool(
                    tools_pb2.CallToolRequest(tool_id=add, arguments={"a": 1, "b": 2}), metadata=md
                )
                assert reply.text == "3"

            async def via_typecase_openapi():
                reply = await stub.CallTool(
                    tools_pb2.CallToolRequest(tool_id=get, arguments={"pet_id": "1"}), metadata=md
                )
                assert json.loads(reply.text)["name"] == "Rex"

            async with Client(
                streamable_http_client(mcp_url, http_client=httpx2.AsyncClient(timeout=30)), mode="legacy", cache=None
            ) as client:

                async def direct_mcp():
                    result = await client.call_tool("add", {"a": 1, "b": 2})
                    assert result.content[0].text == "3"

                mcp_direct, mcp_typecase = await interleaved([direct_mcp, via_typecase_mcp], calls)

            async def get_tool():  # the same service, auth and tool lookup, no upstream
                assert (await stub.GetTool(tools_pb2.GetToolRequest(tool_id=get), metadata=md)).tool.name == "getPet"

            bare, bare_port = await bare_server(await stub.GetTool(tools_pb2.GetToolRequest(tool_id=get), metadata=md))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}") as bare_channel:
                bare_stub = tools_pb2_grpc.ToolServiceStub(bare_channel)

                async def grpc_floor():  # the same request, metadata and reply on a bare grpc.aio server
                    reply = await bare_stub.GetTool(tools_pb2.GetToolRequest(tool_id=get), metadata=md)
                    assert reply.tool.name == "getPet"

                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{svc_port}", headers={"X-API-Key": KEY}
                ) as http:

                    async def direct_openapi():
                        assert (await http.get("/api/pets/1")).json()["name"] == "Rex"

                    api_direct, api_typecase, get_times, floor_times = await interleaved(
                        [direct_openapi, via_typecase_openapi, get_tool, grpc_floor], calls
                    )
            await bare.stop(None)

            # A catalogue of 1,000 tools: one OpenAPI document with 996 operations beside the built-ins and the above.
            paths = {
                f"/op{i}": {
                    "get": {
                        "operationId": f"op{i}",
                        "summary": f"Operation {i}",
                        "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                    }
                }
                for i in range(1000 - len(listed.tools))
            }
            document = json.dumps({"openapi": "3.1.0", "servers": [{"url": "http://127.0.0.1:9"}], "paths": paths})
            await stub.CreateToolProvider(
                tools_pb2.CreateToolProviderRequest(
                    provider=tools_pb2.ToolProvider(
                        name="big",
                        kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                        openapi=tools_pb2.OpenApiSource(document=document),
                    )
                ),
                metadata=md,
            )

            async def list_all():
                reply = await stub.ListTools(tools_pb2.ListToolsRequest(page_size=1000), metadata=md)
                assert len(reply.tools) == 1000, len(reply.tools)

            catalogue = await timed(list_all, lists)
    finally:
        await app.stop()
        stop(mcp_proc)
        stop(svc_proc)

    floor = p50(floor_times)
    print(f"{'':34}{'direct p50':>12}{'Typecase p50':>14}{'added p50':>11}{'paired':>9}{'above floor':>13}")
    for label, direct, through in (
        ("MCP tool (streamable HTTP)", mcp_direct, mcp_typecase),
        ("OpenAPI operation (API key)", api_direct, api_typecase),
    ):
        d, t = p50(direct), p50(through)
        paired = p50([b - a for a, b in zip(direct, through, strict=True)])
        print(f"{label:34}{d:10.2f}ms{t:12.2f}ms{t - d:9.2f}ms{paired:7.2f}ms{t - d - floor:11.2f}ms")
    print(
        f"GetTool (gRPC, interceptors, auth, cached lookup; no upstream): p50 {p50(get_times):.2f} ms, "
        f"{p50(get_times) - floor:.2f} ms above the floor"
    )
    print(f"floor: the same GetTool on a bare grpc.aio server (no interceptors, auth or lookup): p50 {floor:.2f} ms")
    print("added p50: Typecase p50 - direct p50; paired: p50 of each round's difference (drift cancels); above floor:")
    print("added p50 - floor, i.e. what Typecase's own code adds beyond a bare gRPC round trip")
    print(f"ListTools, 1,000 tools in one page: p50 {p50(catalogue):.1f} ms over {lists} lists")
    return {
        "get_tool": p50(get_times),
        "floor": floor,
        "mcp": (p50(mcp_direct), p50(mcp_typecase)),
        "openapi": (p50(api_direct), p50(api_typecase)),
        "list_1000": p50(catalogue),
        "calls": len(mcp_typecase) + len(api_typecase),
    }


async def bare_server(reply):
    """A grpc.aio server answering ToolService.GetTool with `reply`, nothing else: gRPC's own round trip."""
    import grpc

    from typecase.v1 import tools_pb2

    async def get_tool(request, context):
        return reply

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "typecase.v1.ToolService",
                {
                    "GetTool": grpc.unary_unary_rpc_method_handler(
                        get_tool,
                        request_deserializer=tools_pb2.GetToolRequest.FromString,
                        response_serializer=tools_pb2.GetToolResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--lists", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.lists))
