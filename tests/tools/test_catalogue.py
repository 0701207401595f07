"""The catalogue: built-ins seeded once and listed by category, calls validated and bounded, errors by reason."""

from __future__ import annotations

import grpc
import pytest

from tests.tools.support import admin, call, new_user, reason
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_built_in_tools_are_seeded_once_and_listed_by_category(tapp, tchannel):
    user = await new_user(tchannel)
    await tapp.servicers["ToolService"].start()  # a second start (another replica) changes nothing
    listed = await user.tools.ListTools(tools_pb2.ListToolsRequest(provider_id="builtin"), metadata=user.md)
    names = sorted(t.name for t in listed.tools)
    assert names == ["current_time", "http_request", "knowledge_search", "run_python"]
    web = await user.tools.ListTools(tools_pb2.ListToolsRequest(category="web"), metadata=user.md)
    assert [t.id for t in web.tools] == ["builtin-http_request"]
    found = await user.tools.ListTools(tools_pb2.ListToolsRequest(keyword="TIME"), metadata=user.md)
    assert [t.name for t in found.tools] == ["current_time"]
    provider = (
        await user.tools.GetToolProvider(tools_pb2.GetToolProviderRequest(provider_id="builtin"), metadata=user.md)
    ).provider
    assert provider.kind == tools_pb2.TOOL_PROVIDER_KIND_BUILTIN and provider.shared and provider.tool_count == 4


async def test_a_built_in_tool_is_called_with_text_and_structured_result(tchannel):
    user = await new_user(tchannel)
    reply = await call(user, "builtin-current_time", {"timezone": "Asia/Tokyo"})
    assert reply.text.endswith("+09:00")
    assert reply.structured.struct_value.fields["timezone"].string_value == "Asia/Tokyo"


async def test_arguments_that_do_not_match_the_schema_are_refused_naming_the_field(tchannel):
    user = await new_user(tchannel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, "builtin-current_time", {"timezone": 5})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(caught.value) == "TOOL_ARGUMENTS_INVALID" and "$.timezone" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, "builtin-current_time", {"zone": "UTC"})
    assert reason(caught.value) == "TOOL_ARGUMENTS_INVALID"


async def test_a_failing_tool_is_tool_failed_with_its_message(tchannel):
    user = await new_user(tchannel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, "builtin-current_time", {"timezone": "Mars/Olympus"})
    assert reason(caught.value) == "TOOL_FAILED" and "Mars/Olympus" in caught.value.details()


async def test_an_unknown_tool_is_tool_not_found(tchannel):
    user = await new_user(tchannel)
    for tool_id in ("01HZZZZZZZZZZZZZZZZZZZZZZZ", "flow-01HZZZZZZZZZZZZZZZZZZZZZZZ"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(user, tool_id)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND and reason(caught.value) == "TOOL_NOT_FOUND"


async def test_the_built_in_provider_is_not_deleted_nor_changed_by_users(tchannel):
    user, root = await new_user(tchannel), admin(tchannel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.tools.DeleteToolProvider(
            tools_pb2.DeleteToolProviderRequest(provider_id="builtin"), metadata=user.md
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await root.tools.DeleteToolProvider(
            tools_pb2.DeleteToolProviderRequest(provider_id="builtin"), metadata=root.md
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_tools_are_listed_and_called_over_rest(tapp, tchannel):
    import httpx

    user = await new_user(tchannel)
    headers = {"authorization": f"Bearer {user.credential}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tapp.http_port}", headers=headers) as http:
        listed = (await http.get("/v1/tools", params={"category": "utility"})).json()
        assert [t["id"] for t in listed["tools"]] == ["builtin-current_time"]
        reply = await http.post("/v1/tools/builtin-current_time:call", json={"arguments": {"timezone": "UTC"}})
        assert reply.status_code == 200 and reply.json()["text"].endswith("+00:00")
        bad = await http.post("/v1/tools/builtin-current_time:call", json={"arguments": {"timezone": []}})
        assert bad.status_code == 400
        assert bad.json()["details"][0]["reason"] == "TOOL_ARGUMENTS_INVALID"
        missing = await http.post("/v1/tools/nope:call", json={})
        assert missing.status_code == 404
