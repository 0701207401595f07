"""One user cannot see, change or call another user's private providers: NOT_FOUND on every surface (gRPC, REST
and the Python API); an admin sees all, and a provider an admin shares is listed and called by everyone."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from tests.tools.support import admin, call, new_user, reason
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")

DOCUMENT = json.dumps(
    {
        "openapi": "3.0.3",
        "servers": [{"url": "http://127.0.0.1:9/api"}],
        "paths": {"/secret": {"get": {"operationId": "secretThing", "summary": "Private"}}},
    }
)


async def create(user, name: str) -> tools_pb2.ToolProvider:
    return (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name=name,
                    kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                    headers={"X-Team": "blue"},
                    openapi=tools_pb2.OpenApiSource(document=DOCUMENT),
                )
            ),
            metadata=user.md,
        )
    ).provider


async def expect(code: grpc.StatusCode, rpc, why: str = "") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc
    assert caught.value.code() == code, caught.value.details()
    if why:
        assert reason(caught.value) == why


async def test_another_users_provider_is_not_found_on_every_surface(tapp, tchannel):
    owner, other = await new_user(tchannel, "owner"), await new_user(tchannel, "other")
    provider = await create(owner, "private")
    tool = (await owner.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=owner.md)).tools[
        0
    ]
    nf = grpc.StatusCode.NOT_FOUND
    t = other.tools
    await expect(nf, t.GetToolProvider(tools_pb2.GetToolProviderRequest(provider_id=provider.id), metadata=other.md))
    await expect(
        nf,
        t.UpdateToolProvider(
            tools_pb2.UpdateToolProviderRequest(provider=tools_pb2.ToolProvider(id=provider.id, name="mine")),
            metadata=other.md,
        ),
    )
    await expect(
        nf, t.RefreshToolProvider(tools_pb2.RefreshToolProviderRequest(provider_id=provider.id), metadata=other.md)
    )
    await expect(
        nf, t.DeleteToolProvider(tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=other.md)
    )
    await expect(nf, t.GetTool(tools_pb2.GetToolRequest(tool_id=tool.id), metadata=other.md), "TOOL_NOT_FOUND")
    await expect(nf, call(other, tool.id), "TOOL_NOT_FOUND")
    listed = await t.ListToolProviders(tools_pb2.ListToolProvidersRequest(), metadata=other.md)
    assert provider.id not in [p.id for p in listed.providers]
    tools = await t.ListTools(tools_pb2.ListToolsRequest(page_size=1000), metadata=other.md)
    assert tool.id not in [x.id for x in tools.tools]
    assert not (await t.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=other.md)).tools

    headers = {"authorization": f"Bearer {other.credential}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tapp.http_port}", headers=headers) as http:
        for method, path, body in (
            ("GET", f"/v1/tool-providers/{provider.id}", None),
            ("PATCH", f"/v1/tool-providers/{provider.id}", {"name": "mine"}),
            ("DELETE", f"/v1/tool-providers/{provider.id}", None),
            ("POST", f"/v1/tool-providers/{provider.id}:refresh", {}),
            ("GET", f"/v1/tools/{tool.id}", None),
            ("POST", f"/v1/tools/{tool.id}:call", {"arguments": {}}),
        ):
            reply = await http.request(method, path, json=body)
            assert reply.status_code == 404, (method, path, reply.text)
        assert tool.id not in (await http.get("/v1/tools", params={"page_size": 1000})).text

    # The owner still has it, unchanged; an admin sees it too.
    root = admin(tchannel)
    for who in (owner, root):
        kept = (
            await who.tools.GetToolProvider(tools_pb2.GetToolProviderRequest(provider_id=provider.id), metadata=who.md)
        ).provider
        assert kept.name == "private"


async def test_only_an_admin_shares_a_provider_and_then_everyone_calls_it(tchannel):
    owner, other, root = await new_user(tchannel, "sharer"), await new_user(tchannel, "reader"), admin(tchannel)
    provider = await create(owner, "teamwide")
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        owner.tools.UpdateToolProvider(
            tools_pb2.UpdateToolProviderRequest(provider=tools_pb2.ToolProvider(id=provider.id, shared=True)),
            metadata=owner.md,
        ),
    )
    await root.tools.UpdateToolProvider(
        tools_pb2.UpdateToolProviderRequest(
            provider=tools_pb2.ToolProvider(id=provider.id, shared=True), update_mask={"paths": ["shared"]}
        ),
        metadata=root.md,
    )
    seen = (
        await other.tools.GetToolProvider(tools_pb2.GetToolProviderRequest(provider_id=provider.id), metadata=other.md)
    ).provider
    assert seen.shared and dict(seen.headers) == {"X-Team": "****"}
    # Seeing is not editing: a shared provider is still changed only by its owner or an admin.
    await expect(
        grpc.StatusCode.NOT_FOUND,
        other.tools.DeleteToolProvider(tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=other.md),
    )
    tool = (await other.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=other.md)).tools[
        0
    ]
    await expect(grpc.StatusCode.UNAVAILABLE, call(other, tool.id), "TOOL_FAILED")  # callable; port 9 is closed


async def test_provider_changes_are_audited(tapp, tchannel):
    owner = await new_user(tchannel, "audited")
    provider = await create(owner, "audited")
    await owner.tools.DeleteToolProvider(
        tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=owner.md
    )
    events = await tapp.audit.query(limit=10, resource_id=provider.id)
    assert [e.action for e in events] == ["tool_provider.delete", "tool_provider.create"]
    assert all(e.actor_id == owner.user_id for e in events)


async def test_a_deleted_or_unshared_provider_stops_answering_at_once_on_this_replica(tchannel):
    owner, other, root = await new_user(tchannel, "quick"), await new_user(tchannel, "quickreader"), admin(tchannel)
    provider = await create(owner, "short-lived")
    tool = (await owner.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=owner.md)).tools[
        0
    ]
    await root.tools.UpdateToolProvider(
        tools_pb2.UpdateToolProviderRequest(
            provider=tools_pb2.ToolProvider(id=provider.id, shared=True), update_mask={"paths": ["shared"]}
        ),
        metadata=root.md,
    )
    await expect(grpc.StatusCode.UNAVAILABLE, call(other, tool.id), "TOOL_FAILED")  # cached as shared now
    await root.tools.UpdateToolProvider(
        tools_pb2.UpdateToolProviderRequest(
            provider=tools_pb2.ToolProvider(id=provider.id, shared=False), update_mask={"paths": ["shared"]}
        ),
        metadata=root.md,
    )
    await expect(grpc.StatusCode.NOT_FOUND, call(other, tool.id), "TOOL_NOT_FOUND")
    await owner.tools.DeleteToolProvider(
        tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=owner.md
    )
    await expect(grpc.StatusCode.NOT_FOUND, call(owner, tool.id), "TOOL_NOT_FOUND")


async def test_a_provider_granted_to_a_group_is_listed_and_called_by_members_only(tapp, tchannel):
    from typecase.v1 import groups_pb2, groups_pb2_grpc

    owner, member, outsider = (
        await new_user(tchannel, "gowner"),
        await new_user(tchannel, "gmember"),
        await new_user(tchannel, "goutsider"),
    )
    provider = await create(owner, "team tools")
    tool = (await owner.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=owner.md)).tools[
        0
    ]
    groups = groups_pb2_grpc.GroupServiceStub(tchannel)
    boss = admin(tchannel)
    team = (
        await groups.CreateGroup(
            groups_pb2.CreateGroupRequest(group=groups_pb2.Group(name="tool team")), metadata=boss.md
        )
    ).group
    await groups.AddGroupMember(
        groups_pb2.AddGroupMemberRequest(group_id=team.id, member=groups_pb2.GroupMember(user_id=member.user_id)),
        metadata=boss.md,
    )
    await groups.CreateGrant(
        groups_pb2.CreateGrantRequest(
            grant=groups_pb2.Grant(
                resource_type="tool_provider",
                resource_id=provider.id,
                grantee_type=groups_pb2.GRANTEE_TYPE_GROUP,
                grantee_id=team.id,
            )
        ),
        metadata=owner.md,
    )

    listed = await member.tools.ListToolProviders(tools_pb2.ListToolProvidersRequest(), metadata=member.md)
    assert provider.id in [p.id for p in listed.providers]
    await member.tools.GetTool(tools_pb2.GetToolRequest(tool_id=tool.id), metadata=member.md)
    tools = await member.tools.ListTools(tools_pb2.ListToolsRequest(page_size=1000), metadata=member.md)
    assert tool.id in [x.id for x in tools.tools]
    # A use grant does not let the member change it: PERMISSION_DENIED (SHARE_LEVEL_INSUFFICIENT), as for bases.
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        member.tools.DeleteToolProvider(
            tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=member.md
        ),
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        outsider.tools.GetToolProvider(tools_pb2.GetToolProviderRequest(provider_id=provider.id), metadata=outsider.md),
    )
    await expect(grpc.StatusCode.NOT_FOUND, call(outsider, tool.id), "TOOL_NOT_FOUND")
