"""Sharing at EDIT level on flows, assistants and tool providers (issue 25), through the public gRPC API: bob (an
EDIT grant) updates, dan (a USE grant) is refused with PERMISSION_DENIED (SHARE_LEVEL_INSUFFICIENT), carol
(nothing) gets NOT_FOUND; deleting, publishing and re-sharing stay with the owner. And a flow that runs as its owner
carries the owner's groups: it searches a base shared with the owner's group for any user who runs it."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.conftest import ADMIN_KEY
from tests.flow.support import edge, graph, node, outputs, run_flow
from tests.flow.support import new_user as flow_user
from tests.flow.test_local_model import wait_indexed
from tests.tools.support import new_user
from typecase.v1 import (
    assistant_pb2,
    assistant_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    groups_pb2,
    groups_pb2_grpc,
    knowledge_pb2,
    knowledge_pb2_grpc,
    tools_pb2,
)

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
EDIT, USE = groups_pb2.SHARE_LEVEL_EDIT, groups_pb2.SHARE_LEVEL_USE


async def refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value.code(), str(failure.value.trailing_metadata())


async def share(groups, owner_md, resource_type: str, resource_id: str, user_id: str, level: int) -> None:
    await groups.CreateGrant(
        groups_pb2.CreateGrantRequest(
            grant=groups_pb2.Grant(
                resource_type=resource_type,
                resource_id=resource_id,
                grantee_type=groups_pb2.GRANTEE_TYPE_USER,
                grantee_id=user_id,
                level=level,
            )
        ),
        metadata=owner_md,
    )


async def assert_levels(change, bob, dan, carol) -> None:
    """`change(md)` is the update: bob's passes, dan's is refused for its level, carol's finds nothing."""
    await change(bob.md)
    code, details = await refused(change(dan.md))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "SHARE_LEVEL_INSUFFICIENT" in details
    assert (await refused(change(carol.md)))[0] == grpc.StatusCode.NOT_FOUND


def start_end() -> flow_pb2.Graph:
    return graph([node("start", "start"), node("end", "end")], [edge("start", "end")])


async def test_edit_grants_let_the_grantee_update_flows_assistants_and_tool_providers(running_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        alice, bob, dan, carol = [await new_user(channel, name) for name in ("alice", "bob", "dan", "carol")]
        groups = groups_pb2_grpc.GroupServiceStub(channel)
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        assistants = assistant_pb2_grpc.AssistantServiceStub(channel)

        # -- a draft flow --------------------------------------------------------------------------------------
        flow = (
            await flows.CreateFlow(
                flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="triage", graph=start_end())), metadata=alice.md
            )
        ).flow
        await share(groups, alice.md, "flow", flow.id, bob.user_id, EDIT)
        await share(groups, alice.md, "flow", flow.id, dan.user_id, USE)

        def rename(md):
            return flows.UpdateFlow(
                flow_pb2.UpdateFlowRequest(
                    flow=flow_pb2.Flow(id=flow.id, description="edited by a grantee"),
                    update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                ),
                metadata=md,
            )

        await assert_levels(rename, bob, dan, carol)
        got = (await flows.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=alice.md)).flow
        assert got.description == "edited by a grantee"
        version = await flows.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, version=flow_pb2.FlowVersion(name="bob's try")),
            metadata=bob.md,
        )
        assert version.version.name == "bob's try"
        listed = await flows.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id), metadata=bob.md)
        assert "bob's try" in [v.name for v in listed.versions]
        # What stays the owner's: delete, publish, run_as (the owner's rights), re-sharing.
        for call in (
            flows.DeleteFlow(flow_pb2.DeleteFlowRequest(flow_id=flow.id), metadata=bob.md),
            flows.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=bob.md),
            flows.UpdateFlow(
                flow_pb2.UpdateFlowRequest(
                    flow=flow_pb2.Flow(id=flow.id, run_as=flow_pb2.FLOW_RUN_AS_OWNER),
                    update_mask=field_mask_pb2.FieldMask(paths=["run_as"]),
                ),
                metadata=bob.md,
            ),
            share(groups, bob.md, "flow", flow.id, carol.user_id, USE),
        ):
            assert (await refused(call))[0] == grpc.StatusCode.PERMISSION_DENIED
        # A flow that runs as its owner cannot be edited by a grantee: it would run their graph with alice's rights.
        await flows.UpdateFlow(
            flow_pb2.UpdateFlowRequest(
                flow=flow_pb2.Flow(id=flow.id, run_as=flow_pb2.FLOW_RUN_AS_OWNER),
                update_mask=field_mask_pb2.FieldMask(paths=["run_as"]),
            ),
            metadata=alice.md,
        )
        code, details = await refused(rename(bob.md))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "SHARE_LEVEL_INSUFFICIENT" in details

        # -- a draft assistant -----------------------------------------------------------------------------------
        assistant = (
            await assistants.CreateAssistant(
                assistant_pb2.CreateAssistantRequest(assistant=assistant_pb2.Assistant(name="helpdesk")),
                metadata=alice.md,
            )
        ).assistant
        await share(groups, alice.md, "assistant", assistant.id, bob.user_id, EDIT)
        await share(groups, alice.md, "assistant", assistant.id, dan.user_id, USE)

        def describe(md):
            return assistants.UpdateAssistant(
                assistant_pb2.UpdateAssistantRequest(
                    assistant=assistant_pb2.Assistant(id=assistant.id, description="tuned by bob"),
                    update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                ),
                metadata=md,
            )

        await assert_levels(describe, bob, dan, carol)
        seen = await assistants.GetAssistant(
            assistant_pb2.GetAssistantRequest(assistant_id=assistant.id), metadata=dan.md
        )
        assert seen.assistant.description == "tuned by bob"  # a USE grantee sees the draft
        mine_and_shared = await assistants.ListAssistants(assistant_pb2.ListAssistantsRequest(), metadata=dan.md)
        assert assistant.id in [a.id for a in mine_and_shared.assistants]
        carols = await assistants.ListAssistants(assistant_pb2.ListAssistantsRequest(), metadata=carol.md)
        assert assistant.id not in [a.id for a in carols.assistants]
        for call in (
            assistants.DeleteAssistant(
                assistant_pb2.DeleteAssistantRequest(assistant_id=assistant.id), metadata=bob.md
            ),
            assistants.PublishAssistant(
                assistant_pb2.PublishAssistantRequest(assistant_id=assistant.id), metadata=bob.md
            ),
        ):
            assert (await refused(call))[0] == grpc.StatusCode.PERMISSION_DENIED

        # -- a tool provider (an MCP server that is not running: the provider exists, with its error) -----------
        provider = (
            await alice.tools.CreateToolProvider(
                tools_pb2.CreateToolProviderRequest(
                    provider=tools_pb2.ToolProvider(
                        name="crm",
                        kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
                        mcp=tools_pb2.McpServer(url="http://127.0.0.1:9/mcp"),
                    )
                ),
                metadata=alice.md,
            )
        ).provider
        await share(groups, alice.md, "tool_provider", provider.id, bob.user_id, EDIT)
        await share(groups, alice.md, "tool_provider", provider.id, dan.user_id, USE)

        def retime(md):
            return alice.tools.UpdateToolProvider(
                tools_pb2.UpdateToolProviderRequest(
                    provider=tools_pb2.ToolProvider(id=provider.id, timeout_ms=20_000),
                    update_mask=field_mask_pb2.FieldMask(paths=["timeout_ms"]),
                ),
                metadata=md,
            )

        await assert_levels(retime, bob, dan, carol)
        # Where the credentials go stays alice's: bob may not repoint the server, nor delete it.
        repoint = alice.tools.UpdateToolProvider(
            tools_pb2.UpdateToolProviderRequest(
                provider=tools_pb2.ToolProvider(id=provider.id, mcp=tools_pb2.McpServer(url="http://127.0.0.1:8/x")),
                update_mask=field_mask_pb2.FieldMask(paths=["mcp"]),
            ),
            metadata=bob.md,
        )
        assert (await refused(repoint))[0] == grpc.StatusCode.PERMISSION_DENIED
        delete = alice.tools.DeleteToolProvider(
            tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=bob.md
        )
        assert (await refused(delete))[0] == grpc.StatusCode.PERMISSION_DENIED


async def test_a_flow_run_as_its_owner_carries_the_owners_groups(running_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        erin, alice, runner = [await flow_user(channel, name) for name in ("erin", "alice2", "runner")]
        kbs = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        groups = groups_pb2_grpc.GroupServiceStub(channel)
        kb = (
            await kbs.CreateKnowledgeBase(
                knowledge_pb2.CreateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(name="lab")),
                metadata=erin.md,
            )
        ).knowledge_base
        planted = (
            await kbs.AddTextFile(
                knowledge_pb2.AddTextFileRequest(
                    kb_id=kb.id, name="lab.txt", text="The centrifuge in room 12 spins at 4711 rpm."
                ),
                metadata=erin.md,
            )
        ).file
        await wait_indexed(kbs, erin.md, planted.id)
        research = (
            await groups.CreateGroup(
                groups_pb2.CreateGroupRequest(group=groups_pb2.Group(name="research-run-as")), metadata=ADMIN
            )
        ).group
        await groups.AddGroupMember(
            groups_pb2.AddGroupMemberRequest(
                group_id=research.id, member=groups_pb2.GroupMember(user_id=alice.user_id)
            ),
            metadata=ADMIN,
        )
        await groups.CreateGrant(
            groups_pb2.CreateGrantRequest(
                grant=groups_pb2.Grant(
                    resource_type="knowledge_base",
                    resource_id=kb.id,
                    grantee_type=groups_pb2.GRANTEE_TYPE_GROUP,
                    grantee_id=research.id,
                    level=USE,
                )
            ),
            metadata=erin.md,
        )

        g = graph(
            [
                node("start", "start", variables=[{"name": "q"}]),
                node("kr", "knowledge_retrieval", kb_ids=[kb.id], query="{{q}}", mode="keyword"),
                node("end", "end", outputs={"n": "{{kr.count}}"}),
            ],
            [edge("start", "kr"), edge("kr", "end")],
        )
        flow = (
            await alice.flow.CreateFlow(
                flow_pb2.CreateFlowRequest(
                    flow=flow_pb2.Flow(name="lab answers", graph=g, run_as=flow_pb2.FLOW_RUN_AS_OWNER)
                ),
                metadata=alice.md,
            )
        ).flow
        await alice.flow.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=alice.md)

        # alice reads the base only through her group; the runner is in no group, yet the flow answers them.
        assert outputs(await run_flow(alice, flow.id, {"q": "centrifuge"})) == {"n": 1.0}
        assert outputs(await run_flow(runner, flow.id, {"q": "centrifuge"})) == {"n": 1.0}
        # Out of the group, alice's flow loses the base for everyone on the next run.
        await groups.RemoveGroupMember(
            groups_pb2.RemoveGroupMemberRequest(group_id=research.id, user_id=alice.user_id), metadata=ADMIN
        )
        failed = (await run_flow(runner, flow.id, {"q": "centrifuge"}))[-1].event
        assert failed.HasField("run_failed") and "4711" not in str(failed)
