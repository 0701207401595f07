"""Built-in tools beyond current_time: published flows as tools, http_request through the SSRF guard, run_python
in the sandbox (or refused without one)."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.tools.servers import start, stop
from tests.tools.support import call, new_user, reason, to_dict
from typecase.v1 import flow_pb2, flow_pb2_grpc, tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


def node(node_id: str, kind: str, **params) -> flow_pb2.Node:
    message = flow_pb2.Node(id=node_id, type=flow_pb2.NodeType.Value(f"NODE_TYPE_{kind.upper()}"), name=node_id)
    message.params.update(params)
    return message


def greeting_graph() -> flow_pb2.Graph:
    nodes = [
        node(
            "start",
            "start",
            variables=[
                {"name": "who", "type": "text", "required": True},
                {"name": "times", "type": "number", "default": 1},
            ],
        ),
        node("p", "prompt", template="Hello {{who}} x{{times}}"),
        node("end", "end", outputs={"answer": "{{p.text}}"}),
    ]
    edges = [flow_pb2.Edge(id="a", source="start", target="p"), flow_pb2.Edge(id="b", source="p", target="end")]
    return flow_pb2.Graph(nodes=nodes, edges=edges)


async def test_a_published_flow_is_a_tool_with_its_start_variables(tchannel):
    alice, bob = await new_user(tchannel, "alice"), await new_user(tchannel, "bob")
    flows = flow_pb2_grpc.FlowServiceStub(tchannel)
    flow = (
        await flows.CreateFlow(
            flow_pb2.CreateFlowRequest(
                flow=flow_pb2.Flow(name="greeter", description="Greets someone", graph=greeting_graph())
            ),
            metadata=alice.md,
        )
    ).flow
    tool_id = f"flow-{flow.id}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a draft is not a tool
        await call(bob, tool_id, {"who": "x"})
    assert reason(caught.value) == "TOOL_NOT_FOUND"
    await flows.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=alice.md)

    listed = await bob.tools.ListTools(tools_pb2.ListToolsRequest(category="flow", keyword="greet"), metadata=bob.md)
    assert [t.id for t in listed.tools] == [tool_id]
    parameters = to_dict(listed.tools[0])["parameters"]
    assert parameters["required"] == ["who"] and parameters["properties"]["times"]["type"] == "number"
    reply = await call(bob, tool_id, {"who": "Bob", "times": 3})
    assert reply.text == "Hello Bob x3"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(bob, tool_id, {"times": 3})
    assert reason(caught.value) == "TOOL_ARGUMENTS_INVALID"
    await flows.UnpublishFlow(flow_pb2.UnpublishFlowRequest(flow_id=flow.id), metadata=alice.md)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(bob, tool_id, {"who": "Bob"})
    assert reason(caught.value) == "TOOL_NOT_FOUND"


async def test_http_request_reaches_an_allowed_host_through_the_shared_guard(tchannel):
    proc, port = start("tests.tools.openapi_service", "{port}", "k")
    try:
        user = await new_user(tchannel)
        reply = await call(user, "builtin-http_request", {"url": f"http://127.0.0.1:{port}/openapi.json"})
        assert json.loads(reply.text)["openapi"] == "3.1.0"
        assert reply.structured.struct_value.fields["status_code"].number_value == 200
    finally:
        stop(proc)


async def test_run_python_runs_in_the_sandbox_or_is_refused_without_one(tapp, tchannel):
    user = await new_user(tchannel)
    code = "def main(x):\n    return {'double': x * 2}\n"
    if tapp.sandbox.available:
        reply = await call(user, "builtin-run_python", {"code": code, "inputs": {"x": 21}})
        assert reply.structured.struct_value.fields["outputs"].struct_value.fields["double"].number_value == 42
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(user, "builtin-run_python", {"code": code, "inputs": {"x": 21}})
        assert reason(caught.value) == "TOOL_FAILED" and "no working sandbox" in caught.value.details()
