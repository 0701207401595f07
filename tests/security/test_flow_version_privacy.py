"""What a user who may run a published flow, but not edit it, sees of it (issue 18, finding 2): none of its
versions (an unpublished draft may hold anything), and the current graph with its secret params (http node
headers, code node code) redacted, in GetFlow and in the events and node records of their own runs. The flow's
editors (owner, admin) keep seeing everything. Over gRPC and REST."""

from __future__ import annotations

import json

import grpc
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.flow.support import admin, collect, create_flow, edge, graph, new_user, node, run_flow, to_dict
from tests.security.domain_support import http_server, rest, rest_run
from typecase.v1 import flow_pb2

HEADER_SECRET = "Bearer owner-upstream-secret"
CODE_SECRET = "code-holds-secret-9931"
DRAFT_SECRET = "draft-only-secret-5512"


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def published_graph(port: int, secret: str = HEADER_SECRET) -> flow_pb2.Graph:
    code = f"def main():\n    token = '{CODE_SECRET}'\n    return {{'n': len(token)}}"
    return graph(
        [
            node("start", "start"),
            node(
                "h",
                "http_request",
                url=f"http://127.0.0.1:{port}/echo",
                headers={"Authorization": secret, "X-Trace": "trace-1"},
            ),
            node("c", "code", code=code),
            node("end", "end", outputs={"status": "{{h.status_code}}", "n": "{{c.n}}"}),
        ],
        [edge("start", "h"), edge("h", "c"), edge("c", "end")],
    )


@pytest.fixture
async def world(app_factory):
    app = await app_factory(flow_http_allowed_hosts=["127.0.0.0/8"])
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
        http_server([Route("/echo", echo)]) as port,
    ):
        owner = await new_user(channel, "flow-owner")
        runner = await new_user(channel, "flow-runner")
        flow = await create_flow(owner, "secretive", published_graph(port))
        draft = (
            await owner.flow.CreateFlowVersion(
                flow_pb2.CreateFlowVersionRequest(
                    flow_id=flow.id,
                    version=flow_pb2.FlowVersion(name="draft", graph=published_graph(port, DRAFT_SECRET)),
                ),
                metadata=owner.md,
            )
        ).version
        await owner.flow.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=owner.md)
        yield app, channel, owner, runner, flow, draft


async def denied(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value.code()


async def test_a_runner_sees_no_version_of_a_published_flow(world):
    app, _, owner, runner, flow, draft = world
    f = runner.flow
    for version_id in (draft.id, flow.current_version_id):
        assert (
            await denied(
                f.GetFlowVersion(
                    flow_pb2.GetFlowVersionRequest(flow_id=flow.id, version_id=version_id), metadata=runner.md
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
    assert (
        await denied(f.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id), metadata=runner.md))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await denied(
            f.ValidateFlow(flow_pb2.ValidateFlowRequest(flow_id=flow.id, version_id=draft.id), metadata=runner.md)
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await denied(
            collect(f.RunFlow(flow_pb2.RunFlowRequest(flow_id=flow.id, version_id=draft.id), metadata=runner.md))
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    async with rest(app, runner) as http:
        for path in (f"/v1/flows/{flow.id}/versions/{draft.id}", f"/v1/flows/{flow.id}/versions"):
            response = await http.get(path)
            assert response.status_code == 403 and DRAFT_SECRET not in response.text, (path, response.text[:300])

    for editor in (owner, admin(world[1])):  # the owner and the admin still read every version in full
        got = (
            await editor.flow.GetFlowVersion(
                flow_pb2.GetFlowVersionRequest(flow_id=flow.id, version_id=draft.id), metadata=editor.md
            )
        ).version
        assert DRAFT_SECRET in json.dumps(to_dict(got.graph))
        listed = (
            await editor.flow.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id), metadata=editor.md)
        ).versions
        assert {v.id for v in listed} == {draft.id, flow.current_version_id}


async def test_a_runner_sees_the_current_graph_with_its_secret_params_redacted(world):
    app, channel, owner, runner, flow, _ = world
    shown = (await runner.flow.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=runner.md)).flow
    nodes = {n.id: to_dict(n) for n in shown.graph.nodes}
    assert nodes["h"]["params"]["headers"] == {"Authorization": "****", "X-Trace": "****"}
    assert nodes["h"]["params"]["url"].endswith("/echo")  # what is not secret stays
    assert nodes["c"]["params"]["code"] == "****"
    async with rest(app, runner) as http:
        response = await http.get(f"/v1/flows/{flow.id}")
    assert response.status_code == 200
    assert "owner-upstream-secret" not in response.text and CODE_SECRET not in response.text

    full = (await owner.flow.GetFlow(flow_pb2.GetFlowRequest(flow_id=flow.id), metadata=owner.md)).flow
    assert {n.id: to_dict(n) for n in full.graph.nodes}["h"]["params"]["headers"]["Authorization"] == HEADER_SECRET


async def test_a_runners_own_run_does_not_echo_the_secret_params(world):
    app, _, owner, runner, flow, _ = world
    events = await run_flow(runner, flow.id)
    assert events[-1].event.HasField("run_finished"), events[-1]
    finished = {
        e.event.node_finished.node_id: to_dict(e.event.node_finished)
        for e in events
        if e.event.HasField("node_finished")
    }
    assert finished["h"]["inputs"]["headers"] == {"Authorization": "****", "X-Trace": "****"}
    everything = json.dumps([to_dict(e) for e in events])
    assert "owner-upstream-secret" not in everything and CODE_SECRET not in everything

    run = (await runner.flow.GetRun(flow_pb2.GetRunRequest(run_id=events[0].run_id), metadata=runner.md)).run
    assert "owner-upstream-secret" not in json.dumps(to_dict(run))
    replayed = await collect(
        runner.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=run.id), metadata=runner.md)
    )
    assert "owner-upstream-secret" not in json.dumps([to_dict(e) for e in replayed])

    async with rest(app, runner) as http:
        results = await rest_run(http, flow.id)
        assert "owner-upstream-secret" not in json.dumps(results) and CODE_SECRET not in json.dumps(results)
        got = await http.get(f"/v1/runs/{results[0]['run_id']}")
        assert got.status_code == 200 and "owner-upstream-secret" not in got.text

    # CompareFlow runs unpublished versions and streams their events: editors only.
    assert (
        await denied(
            collect(
                runner.flow.CompareFlow(
                    flow_pb2.CompareFlowRequest(flow_id=flow.id, version_ids=[flow.current_version_id, world[5].id]),
                    metadata=runner.md,
                )
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
