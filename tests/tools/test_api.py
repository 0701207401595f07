"""The Python API chat and flow receive: declarations for a model, and concurrent batches with deadlines and
cancellation, under the caller's rights."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.tools.servers import start, stop
from tests.tools.support import new_user, tool_by_name
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError
from typecase.server.tools.api import ToolCall
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest.fixture(scope="module")
def mcp_url():
    proc, port = start("tests.tools.mcp_server", "http", "{port}")
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


async def as_user(channel, mcp_url):
    user = await new_user(channel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="api", kind=tools_pb2.TOOL_PROVIDER_KIND_MCP, mcp=tools_pb2.McpServer(url=mcp_url)
                )
            ),
            metadata=user.md,
        )
    ).provider
    assert provider.last_error == ""
    return user, provider


async def test_tools_are_declared_for_a_model_and_a_batch_runs_concurrently(tapp, tchannel, mcp_url):
    user, provider = await as_user(tchannel, mcp_url)
    slow = await tool_by_name(user, provider.id, "slow")
    add = await tool_by_name(user, provider.id, "add")
    api = tapp.servicers["ToolService"].api
    token = caller.bind(caller.Principal(user.user_id, caller.ROLE_USER))
    try:
        declared = await api.declare([add.id, "builtin-current_time", add.id])
        assert [t.name for t in declared.tools] == ["add", "current_time"]
        assert declared.tool_id("add") == add.id and declared.tool_id("nope") == ""
        assert set(declared.tools[0].parameters["properties"].keys()) == {"a", "b"}

        started = time.monotonic()
        results = await api.execute(
            [
                ToolCall("1", slow.id, {"seconds": 2}),
                ToolCall("2", slow.id, '{"seconds": 2}'),
                ToolCall("3", add.id, '{"a": 1, "b": 2}'),
                ToolCall("4", add.id, "not json"),
                ToolCall("5", slow.id, {"seconds": 5}, timeout_seconds=0.3),
                ToolCall("6", "missing", {}),
            ]
        )
        elapsed = time.monotonic() - started
        assert [r.call_id for r in results] == ["1", "2", "3", "4", "5", "6"]
        assert [r.ok for r in results] == [True, True, True, False, False, False]
        assert results[2].text == "3"
        assert [r.reason for r in results[3:]] == ["TOOL_ARGUMENTS_INVALID", "TOOL_TIMEOUT", "TOOL_NOT_FOUND"]
        assert elapsed < 3.5  # the two 2 s calls overlapped (one after the other: 4 s)

        results = await api.execute([ToolCall("d", slow.id, {"seconds": 5})], deadline_seconds=0.3)
        assert results[0].reason == "TOOL_TIMEOUT"
    finally:
        caller.bind_reset(token)


async def test_cancelling_a_batch_cancels_its_calls(tapp, tchannel, mcp_url):
    user, provider = await as_user(tchannel, mcp_url)
    slow = await tool_by_name(user, provider.id, "slow")
    api = tapp.servicers["ToolService"].api
    token = caller.bind(caller.Principal(user.user_id, caller.ROLE_USER))
    try:
        task = asyncio.create_task(api.execute([ToolCall(str(i), slow.id, {"seconds": 30}) for i in range(3)]))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 1
        add = await tool_by_name(user, provider.id, "add")  # the shared session still works
        assert (await api.execute([ToolCall("x", add.id, {"a": 1, "b": 1})]))[0].text == "2"
    finally:
        caller.bind_reset(token)


async def test_a_caller_cannot_declare_another_users_tools(tapp, tchannel, mcp_url):
    owner, provider = await as_user(tchannel, mcp_url)
    other = await new_user(tchannel)
    add = await tool_by_name(owner, provider.id, "add")
    api = tapp.servicers["ToolService"].api
    token = caller.bind(caller.Principal(other.user_id, caller.ROLE_USER))
    try:
        with pytest.raises(TypecaseError) as caught:
            await api.declare([add.id])
        assert caught.value.reason == "TOOL_NOT_FOUND"
        result = (await api.execute([ToolCall("1", add.id, {"a": 1, "b": 1})]))[0]
        assert not result.ok and result.reason == "TOOL_NOT_FOUND"
    finally:
        caller.bind_reset(token)
