"""Publish as API: a key restricted to one flow and the "run" action runs that flow and gets PERMISSION_DENIED
(API_KEY_RESTRICTED) on everything else, over gRPC, REST and the OpenAI-compatible surface; its own rate limit
holds; a malformed restriction is refused naming its field."""

from __future__ import annotations

import grpc
import httpx
import pytest

from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc, flow_pb2, flow_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


def bearer(secret: str):
    return (("authorization", f"Bearer {secret}"),)


def graph() -> flow_pb2.Graph:
    nodes = [
        flow_pb2.Node(id="start", type=flow_pb2.NODE_TYPE_START, name="start"),
        flow_pb2.Node(id="end", type=flow_pb2.NODE_TYPE_END, name="end"),
    ]
    return flow_pb2.Graph(nodes=nodes, edges=[flow_pb2.Edge(id="e", source="start", target="end")])


async def denied(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        result = await call if not hasattr(call, "__aiter__") else [m async for m in call]
        del result
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED, failure.value.details()
    return str(failure.value.trailing_metadata())


async def test_a_key_published_for_one_flow_runs_it_and_nothing_else(running_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        published = (
            await flows.CreateFlow(
                flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="published", graph=graph())), metadata=ADMIN
            )
        ).flow
        other = (
            await flows.CreateFlow(
                flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="other", graph=graph())), metadata=ADMIN
            )
        ).flow
        kb = (
            await knowledge.CreateKnowledgeBase(
                knowledge_pb2.CreateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(name="kb")),
                metadata=ADMIN,
            )
        ).knowledge_base

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth.CreateApiKey(
                auth_pb2.CreateApiKeyRequest(
                    api_key=auth_pb2.ApiKey(name="no actions", resources=[f"flow/{published.id}"])
                ),
                metadata=ADMIN,
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "api_key.actions" in failure.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth.CreateApiKey(
                auth_pb2.CreateApiKeyRequest(
                    api_key=auth_pb2.ApiKey(
                        name="bad", resources=[f"flow/{published.id}"], actions=["run"], rate_limit="often"
                    )
                ),
                metadata=ADMIN,
            )
        assert "api_key.rate_limit" in failure.value.details()

        created = await auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(
                api_key=auth_pb2.ApiKey(
                    name="published flow", resources=[f"flow/{published.id}"], actions=["run"], rate_limit="4/minute"
                )
            ),
            metadata=ADMIN,
        )
        assert list(created.api_key.resources) == [f"flow/{published.id}"] and list(created.api_key.actions) == ["run"]
        key = bearer(created.secret)

        events = [e async for e in flows.RunFlow(flow_pb2.RunFlowRequest(flow_id=published.id), metadata=key)]
        assert events and events[-1].run_id
        run = await flows.GetRun(flow_pb2.GetRunRequest(run_id=events[-1].run_id), metadata=key)
        assert run.run.flow_id == published.id

        # Everything else: another flow, another action, another surface.
        assert "API_KEY_RESTRICTED" in await denied(
            flows.RunFlow(flow_pb2.RunFlowRequest(flow_id=other.id), metadata=key)
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        # (a fresh channel: the rate limit of 4/minute is spent by the next calls, one each)
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        for call in (
            flows.GetFlow(flow_pb2.GetFlowRequest(flow_id=published.id), metadata=key),
            flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=key),
            knowledge.Search(knowledge_pb2.SearchRequest(kb_ids=[kb.id], query="q"), metadata=key),
            auth.GetMe(auth_pb2.GetMeRequest(), metadata=key),
            auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="escape")), metadata=key),
        ):
            assert "API_KEY_RESTRICTED" in await denied(call)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
        headers = {"authorization": key[0][1]}
        assert (await http.get(f"/v1/flows/{published.id}", headers=headers)).status_code == 403
        assert (await http.get("/v1/knowledge-bases", headers=headers)).status_code == 403
        assert (await http.get("/openai/v1/models", headers=headers)).status_code == 403
        # The key's own rate, 4 calls a minute: the run, GetRun and the other flow's refused run spent 3 (calls
        # outside the key's actions are refused before they count), so one more run passes and then none.
        statuses = [
            (await http.post(f"/v1/flows/{published.id}:run", json={}, headers=headers)).status_code for _ in range(3)
        ]
        assert statuses == [200, 429, 429], statuses
