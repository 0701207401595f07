"""Typecase as an MCP server at /mcp: the official mcp client SDK lists and calls the caller's tools with an API key
or access token, and is refused without one."""

from __future__ import annotations

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import ADMIN_KEY
from tests.tools.support import new_user
from tests.tools.test_builtins import greeting_graph
from typecase.v1 import flow_pb2, flow_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")


def mcp_client(app, credential: str | None) -> Client:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return Client(streamable_http_client(f"http://127.0.0.1:{app.http_port}/mcp", http_client=http), mode="legacy")


async def test_an_mcp_client_lists_and_calls_typecase_tools_with_a_credential(tapp, tchannel):
    alice = await new_user(tchannel, "mcpalice")
    flows = flow_pb2_grpc.FlowServiceStub(tchannel)
    flow = (
        await flows.CreateFlow(
            flow_pb2.CreateFlowRequest(
                flow=flow_pb2.Flow(name="mcp greeter", description="Greets over MCP", graph=greeting_graph())
            ),
            metadata=alice.md,
        )
    ).flow
    await flows.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=alice.md)
    bob = await new_user(tchannel, "mcpbob")

    async with mcp_client(tapp, bob.credential) as client:
        listed = await client.list_tools()
        names = {t.name: t for t in listed.tools}
        assert "knowledge_search" in names and "mcp_greeter" in names
        assert names["mcp_greeter"].input_schema["required"] == ["who"]
        result = await client.call_tool("mcp_greeter", {"who": "MCP"})
        assert not result.is_error and result.content[0].text == "Hello MCP x1"
        failed = await client.call_tool("mcp_greeter", {})
        assert failed.is_error and "who" in failed.content[0].text
        searched = await client.call_tool("knowledge_search", {"query": "x", "knowledge_base_ids": ["01NOPE"]})
        assert searched.is_error  # a base the caller cannot read


async def test_the_mcp_endpoint_refuses_a_missing_or_wrong_credential(tapp):
    for credential in (None, "tc-not-a-real-key"):
        with pytest.RaisesGroup(MCPError, flatten_subgroups=True):  # the SDK's task group wraps the 401
            async with mcp_client(tapp, credential) as client:
                await client.list_tools()
    async with httpx2.AsyncClient() as http:
        reply = await http.post(
            f"http://127.0.0.1:{tapp.http_port}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
        assert reply.status_code == 401 and "bearer" in reply.headers["www-authenticate"].lower()


async def test_the_admin_key_works_as_an_mcp_credential(tapp):
    async with mcp_client(tapp, ADMIN_KEY) as client:
        assert any(t.name == "knowledge_search" for t in (await client.list_tools()).tools)
