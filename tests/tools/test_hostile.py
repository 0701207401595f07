"""Hostile and malformed input never fails internally: odd ids, arguments, documents and provider fields are a
clear INVALID_ARGUMENT / NOT_FOUND / TOOL_* answer, and oversized input is refused at its limit."""

from __future__ import annotations

import json
import random

import grpc
import pytest

from tests.tools.support import call, new_user, reason
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")
INTERNAL = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
ODD = [
    "",
    " ",
    "\x00",
    "../../etc/passwd",
    "flow-",
    "flow-../x",
    "builtin-",
    "builtin-nope",
    "x" * 5000,
    "%00",
    "😀",
    "' OR 1=1 --",
    "{}",
    "01HZZZZZZZZZZZZZZZZZZZZZZZ",
]


async def answered(rpc) -> grpc.StatusCode:
    try:
        await rpc
    except grpc.aio.AioRpcError as error:
        assert error.code() not in INTERNAL, error.details()
        return error.code()
    return grpc.StatusCode.OK


async def test_odd_ids_and_filters_are_never_internal_errors(tchannel):
    user = await new_user(tchannel)
    for odd in ODD:
        await answered(user.tools.GetToolProvider(tools_pb2.GetToolProviderRequest(provider_id=odd), metadata=user.md))
        await answered(user.tools.GetTool(tools_pb2.GetToolRequest(tool_id=odd), metadata=user.md))
        await answered(call(user, odd, {"x": odd}))
        await answered(
            user.tools.ListTools(
                tools_pb2.ListToolsRequest(keyword=odd, category=odd[:64], provider_id=odd, page_token=odd),
                metadata=user.md,
            )
        )
        await answered(
            user.tools.DeleteToolProvider(tools_pb2.DeleteToolProviderRequest(provider_id=odd), metadata=user.md)
        )


async def test_random_provider_fields_are_answered_not_crashed(tchannel):
    user = await new_user(tchannel)
    rng = random.Random(21)
    for i in range(40):
        kind = rng.choice([0, 1, 2, 3, 7])
        provider = tools_pb2.ToolProvider(
            name=rng.choice(ODD) + str(i),
            kind=kind,
            timeout_ms=rng.choice([-1, 0, 10**9]),
            headers={rng.choice(ODD): rng.choice(ODD)} if rng.random() < 0.5 else {},
        )
        if rng.random() < 0.5:
            provider.openapi.document = rng.choice(
                [
                    '{"openapi": "3.1.0", "paths": {"/a": {"get": {}}}}',
                    "openapi: 3",
                    "[]",
                    "{" * 1000,
                    json.dumps({"openapi": "3.0", "paths": []}),
                ]
            )
            provider.openapi.auth.type = rng.choice([0, 1, 2, 3, 9])
        else:
            provider.mcp.url = rng.choice(["ftp://x", "http://", "http://[::1", "https://256.0.0.1/mcp", ""])
            provider.mcp.transport = rng.choice([0, 1, 2, 3, 9])
        await answered(
            user.tools.CreateToolProvider(tools_pb2.CreateToolProviderRequest(provider=provider), metadata=user.md)
        )


async def test_arguments_and_timeouts_at_their_limits(tapp, tchannel):
    user = await new_user(tchannel)
    limit = tapp.settings.tools_max_arguments_bytes
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, "builtin-current_time", {"timezone": "x" * limit})
    assert reason(caught.value) == "TOOL_ARGUMENTS_INVALID" and str(limit) in caught.value.details()
    assert await answered(call(user, "builtin-current_time", {}, timeout_ms=-5)) == grpc.StatusCode.INVALID_ARGUMENT
    too_long = int(tapp.settings.tools_max_call_timeout_seconds * 1000) + 1
    assert (
        await answered(
            user.tools.CreateToolProvider(
                tools_pb2.CreateToolProviderRequest(
                    provider=tools_pb2.ToolProvider(
                        name="slow",
                        kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
                        timeout_ms=too_long,
                        mcp=tools_pb2.McpServer(url="http://127.0.0.1:9/mcp"),
                    )
                ),
                metadata=user.md,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_a_document_past_the_size_limit_is_refused(tapp, tchannel):
    user = await new_user(tchannel)
    limit = tapp.settings.tools_max_document_bytes
    document = json.dumps({"openapi": "3.1.0", "paths": {}, "x": "y" * limit})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="huge",
                    kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                    openapi=tools_pb2.OpenApiSource(document=document),
                )
            ),
            metadata=user.md,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and f"larger than {limit}" in caught.value.details()
