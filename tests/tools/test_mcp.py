"""MCP providers: real MCP servers (the SDK's MCPServer) over streamable HTTP on loopback and over stdio."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from tests.conftest import ROOT, free_port
from tests.tools.servers import start, stop
from tests.tools.support import admin, call, new_user, reason, to_dict, tool_by_name
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")
TOKEN = "mcp-secret-token-4242"


def start_mcp_http(token: str = "") -> tuple[subprocess.Popen, str]:
    proc, port = start("tests.tools.mcp_server", "http", "{port}", *([token] if token else []))
    return proc, f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def mcp_http():
    proc, url = start_mcp_http(TOKEN)
    yield url
    stop(proc)


def mcp_provider(name: str, url: str, token: str = TOKEN) -> tools_pb2.ToolProvider:
    return tools_pb2.ToolProvider(
        name=name,
        kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
        headers={"Authorization": f"Bearer {token}"},
        mcp=tools_pb2.McpServer(url=url),
    )


async def test_an_mcp_server_over_streamable_http_is_registered_listed_and_called(tchannel, mcp_http):
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=mcp_provider("calc", mcp_http)), metadata=user.md
        )
    ).provider
    assert provider.last_error == "" and provider.tool_count == 4
    assert dict(provider.headers) == {"Authorization": "****"}  # the token never comes back
    assert TOKEN not in str(to_dict(provider))
    add = await tool_by_name(user, provider.id, "add")
    assert set(to_dict(add)["parameters"]["properties"]) == {"a", "b"} and add.category == "calc"
    reply = await call(user, add.id, {"a": 2, "b": 40})
    assert reply.text == "42"
    echo = await tool_by_name(user, provider.id, "echo")
    assert (await call(user, echo.id, {"text": "hi"})).text == "hi"  # the session is reused


def client_ports(server_port: int) -> set[int]:
    """Local ports of the TCP connections to `server_port` on loopback, open or closed by this side (TIME_WAIT lasts
    a minute), from /proc: the test process is the only client of its MCP server."""
    ports = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(remote.split(":")[1], 16) == server_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


async def test_successive_mcp_calls_reuse_their_connections(tchannel):
    # The SDK closes each POST's SSE response before its last chunk; Typecase reads it to the end so the
    # connection is reused (bench/tools: a new TCP connection per call was part of the added time).
    proc, url = start_mcp_http(TOKEN)
    try:
        user = await new_user(tchannel)
        provider = (
            await user.tools.CreateToolProvider(
                tools_pb2.CreateToolProviderRequest(provider=mcp_provider("reuse", url)), metadata=user.md
            )
        ).provider
        add = await tool_by_name(user, provider.id, "add")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert (await call(user, add.id, {"a": 0, "b": 0})).text == "0"
        before = client_ports(port)
        for i in range(6):
            assert (await call(user, add.id, {"a": i, "b": 1})).text == str(i + 1)
        opened = client_ports(port) - before
        assert len(opened) <= 1, opened  # six calls on the pooled connection, not one connection per call
    finally:
        stop(proc)


async def test_an_mcp_tool_error_is_tool_failed_with_the_servers_message(tchannel, mcp_http):
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=mcp_provider("failing", mcp_http)), metadata=user.md
        )
    ).provider
    explode = await tool_by_name(user, provider.id, "explode")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, explode.id, {"why": "on purpose"})
    assert reason(caught.value) == "TOOL_FAILED" and "exploded: on purpose" in caught.value.details()
    slow = await tool_by_name(user, provider.id, "slow")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, slow.id, {"seconds": 5}, timeout_ms=300)
    assert reason(caught.value) == "TOOL_TIMEOUT"
    assert (await call(user, slow.id, {"seconds": 0})).text == "done"  # the session survived the timeout


async def test_a_dead_mcp_server_fails_its_tools_not_the_catalogue(tchannel):
    user = await new_user(tchannel)
    proc, url = start_mcp_http()
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=mcp_provider("mortal", url)), metadata=user.md
        )
    ).provider
    add = await tool_by_name(user, provider.id, "add")
    stop(proc)
    listed = await user.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=user.md)
    assert len(listed.tools) == 4  # the cached list
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, add.id, {"a": 1, "b": 1})
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and reason(caught.value) == "TOOL_FAILED"
    refreshed = (
        await user.tools.RefreshToolProvider(
            tools_pb2.RefreshToolProviderRequest(provider_id=provider.id), metadata=user.md
        )
    ).provider
    assert refreshed.last_error and refreshed.tool_count == 4


async def test_an_unreachable_server_is_registered_with_its_error(tchannel):
    user = await new_user(tchannel)
    url = f"http://127.0.0.1:{free_port()}/mcp"
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=mcp_provider("nobody", url)), metadata=user.md
        )
    ).provider
    assert provider.tool_count == 0 and provider.last_error


async def test_a_wrong_token_is_refused_by_the_mcp_server(tchannel, mcp_http):
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=mcp_provider("wrongkey", mcp_http, token="nope")),
            metadata=user.md,
        )
    ).provider
    assert provider.tool_count == 0 and "401" in provider.last_error


async def test_an_mcp_server_over_stdio_is_registered_by_an_admin_only(tchannel):
    root, user = admin(tchannel), await new_user(tchannel)
    stdio = tools_pb2.ToolProvider(
        name="local",
        kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
        mcp=tools_pb2.McpServer(
            transport=tools_pb2.MCP_TRANSPORT_STDIO,
            command=sys.executable,
            args=["-m", "tests.tools.mcp_server", "stdio"],
            env={"PYTHONPATH": str(ROOT)},
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.tools.CreateToolProvider(tools_pb2.CreateToolProviderRequest(provider=stdio), metadata=user.md)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    provider = (
        await root.tools.CreateToolProvider(tools_pb2.CreateToolProviderRequest(provider=stdio), metadata=root.md)
    ).provider
    assert provider.last_error == "" and provider.tool_count == 4, provider.last_error
    assert dict(provider.mcp.env) == {"PYTHONPATH": "****"}
    add = await tool_by_name(root, provider.id, "add")
    assert (await call(root, add.id, {"a": 20, "b": 22})).text == "42"
    explode = await tool_by_name(root, provider.id, "explode")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(root, explode.id, {"why": "stdio"})
    assert reason(caught.value) == "TOOL_FAILED" and "exploded: stdio" in caught.value.details()
    await root.tools.DeleteToolProvider(tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=root.md)


async def test_a_servers_list_changed_reloads_its_tools(tchannel):
    import asyncio

    user = await new_user(tchannel)
    proc, port = start("tests.tools.mcp_server", "http", "{port}", "--growing")
    try:
        provider = (
            await user.tools.CreateToolProvider(
                tools_pb2.CreateToolProviderRequest(
                    provider=tools_pb2.ToolProvider(
                        name="growing",
                        kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
                        mcp=tools_pb2.McpServer(url=f"http://127.0.0.1:{port}/mcp"),
                    )
                ),
                metadata=user.md,
            )
        ).provider
        assert provider.tool_count == 5
        grow = await tool_by_name(user, provider.id, "grow")
        assert (await call(user, grow.id)).text == "grown"
        for _ in range(50):
            listed = await user.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=user.md)
            if any(t.name == "grown" for t in listed.tools):
                break
            await asyncio.sleep(0.1)
        grown = await tool_by_name(user, provider.id, "grown")
        assert (await call(user, grown.id)).text == "I was added later"
    finally:
        stop(proc)


async def test_a_result_past_the_size_cap_is_cut_and_marked(tapp, tchannel, mcp_http):
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=mcp_provider("big", mcp_http)), metadata=user.md
        )
    ).provider
    echo = await tool_by_name(user, provider.id, "echo")
    cap = tapp.settings.tools_max_result_bytes
    # The SDK answers {"result": text} as the structured result too: 13 bytes more than the text.
    under = await call(user, echo.id, {"text": "é" * ((cap - 13) // 2)})
    assert not under.truncated and under.structured.struct_value.fields["result"].string_value == under.text
    over = await call(user, echo.id, {"text": "é" * (cap // 2) + "x"})
    assert over.truncated and len(over.text.encode()) == cap and not over.HasField("structured")


async def test_an_idle_session_is_closed_and_the_next_call_reconnects(tapp, mcp_http):
    from typecase.server.tools.kinds.base import Call, Provider
    from typecase.server.tools.kinds.mcp import McpKind

    settings = tapp.settings.model_copy(update={"tools_mcp_idle_seconds": 0.4})
    kind = McpKind(settings, tapp.servicers["FlowService"].http)
    provider = Provider(
        "p1",
        "idle",
        "mcp",
        None,
        {"transport": "streamable_http", "url": mcp_http},
        {"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        assert len(await kind.load(provider)) == 4
        assert "p1" in kind._sessions
        import asyncio

        for _ in range(40):
            if "p1" not in kind._sessions:
                break
            await asyncio.sleep(0.05)
        assert "p1" not in kind._sessions  # closed after 0.4 s without use
        result = await kind.call(Call(provider, "add", {"name": "add"}, {"a": 1, "b": 1}, 5))
        assert result.text == "2"
    finally:
        await kind.aclose()


async def test_an_mcp_server_over_legacy_sse_is_registered_and_called(tchannel):
    user = await new_user(tchannel)
    proc, port = start("tests.tools.mcp_server", "sse", "{port}", TOKEN)
    try:
        provider = (
            await user.tools.CreateToolProvider(
                tools_pb2.CreateToolProviderRequest(
                    provider=tools_pb2.ToolProvider(
                        name="legacy",
                        kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        mcp=tools_pb2.McpServer(
                            transport=tools_pb2.MCP_TRANSPORT_SSE, url=f"http://127.0.0.1:{port}/sse"
                        ),
                    )
                ),
                metadata=user.md,
            )
        ).provider
        assert provider.last_error == "" and provider.tool_count == 4, provider.last_error
        assert provider.mcp.transport == tools_pb2.MCP_TRANSPORT_SSE
        add = await tool_by_name(user, provider.id, "add")
        assert (await call(user, add.id, {"a": 40, "b": 2})).text == "42"
        explode = await tool_by_name(user, provider.id, "explode")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(user, explode.id, {"why": "sse"})
        assert reason(caught.value) == "TOOL_FAILED" and "exploded: sse" in caught.value.details()
    finally:
        stop(proc)
