"""Whose knowledge a published flow searches (issue 18, finding 3): by default the rights of the user running it,
so another user's run of a flow that searches its owner's private base fails clearly instead of reading that
base for them; the owner may choose, explicitly, to answer everyone from the bases the owner picked. Over gRPC
and REST."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.flow.support import create_flow, edge, graph, new_user, node, outputs, reason, reason_of, run_flow
from tests.flow.test_local_model import wait_indexed
from tests.security.domain_support import rest, rest_outputs, rest_run
from typecase.v1 import flow_pb2, knowledge_pb2, knowledge_pb2_grpc

FACT = "The vault under the harbour office opens with the code 4711."


@pytest.fixture
async def world(app_factory):
    app = await app_factory()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        owner = await new_user(channel, "kb-owner")
        runner = await new_user(channel, "kb-runner")
        kbs = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        kb = (
            await kbs.CreateKnowledgeBase(
                knowledge_pb2.CreateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(name="private")),
                metadata=owner.md,
            )
        ).knowledge_base
        planted = (
            await kbs.AddTextFile(
                knowledge_pb2.AddTextFileRequest(kb_id=kb.id, name="vault.txt", text=FACT), metadata=owner.md
            )
        ).file
        await wait_indexed(kbs, owner.md, planted.id)
        g = graph(
            [
                node("start", "start", variables=[{"name": "q"}]),
                node("kr", "knowledge_retrieval", kb_ids=[kb.id], query="{{q}}", mode="keyword"),
                node("end", "end", outputs={"n": "{{kr.count}}"}),
            ],
            [edge("start", "kr"), edge("kr", "end")],
        )
        flow = await create_flow(owner, "vault answers", g)
        await owner.flow.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=owner.md)
        yield app, owner, runner, flow, kb


async def test_a_published_flow_searches_with_the_callers_rights_by_default(world):
    app, owner, runner, flow, kb = world
    assert flow.run_as == flow_pb2.FLOW_RUN_AS_CALLER  # not set on create: the caller
    shown = (await runner.flow.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=runner.md)).flow
    assert shown.run_as == flow_pb2.FLOW_RUN_AS_CALLER

    events = await run_flow(runner, flow.id, {"q": "vault code"})
    failed = events[-1].event.run_failed
    assert reason_of(failed) == "PERMISSION_DENIED" and failed.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert kb.id in failed.message and "cannot be read by the user running this flow" in failed.message
    assert "4711" not in str(events)
    async with rest(app, runner) as http:
        results = await rest_run(http, flow.id, {"q": "vault code"})
    assert results[-1]["event"]["run_failed"]["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "4711" not in str(results)

    assert outputs(await run_flow(owner, flow.id, {"q": "vault code"})) == {"n": 1.0}  # the owner may read it


async def test_the_owner_may_choose_to_answer_everyone_from_the_owners_bases(world):
    app, owner, runner, flow, _ = world
    change = flow_pb2.UpdateFlowRequest(
        flow=flow_pb2.Flow(id=flow.id, run_as=flow_pb2.FLOW_RUN_AS_OWNER),
        update_mask=field_mask_pb2.FieldMask(paths=["run_as"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as online:  # a published flow is read-only: unpublish first
        await owner.flow.UpdateFlow(change, metadata=owner.md)
    assert online.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await owner.flow.UnpublishFlow(flow_pb2.UnpublishFlowRequest(flow_id=flow.id), metadata=owner.md)
    with pytest.raises(grpc.aio.AioRpcError) as stranger:  # only editors choose
        await runner.flow.UpdateFlow(change, metadata=runner.md)
    assert stranger.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    bad = flow_pb2.UpdateFlowRequest(
        flow=flow_pb2.Flow(id=flow.id, run_as=7), update_mask=field_mask_pb2.FieldMask(paths=["run_as"])
    )
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await owner.flow.UpdateFlow(bad, metadata=owner.md)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(invalid.value) == "INVALID_ARGUMENT"
    assert invalid.value.details().startswith("flow.run_as: must be FLOW_RUN_AS_CALLER or FLOW_RUN_AS_OWNER")

    async with rest(app, owner) as http:  # the choice over REST
        response = await http.patch(
            f"/v1/flows/{flow.id}", params={"update_mask": "run_as"}, json={"run_as": "FLOW_RUN_AS_OWNER"}
        )
        assert response.status_code == 200 and response.json()["flow"]["run_as"] == "FLOW_RUN_AS_OWNER"
    await owner.flow.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=owner.md)

    assert outputs(await run_flow(runner, flow.id, {"q": "vault code"})) == {"n": 1.0}
    async with rest(app, runner) as http:
        assert rest_outputs(await rest_run(http, flow.id, {"q": "vault code"})) == {"n": 1}
