"""AGENT and TOOL flow nodes: an AGENT node runs the assistants' loop (tool calls to the real MCP and OpenAPI
servers, results fed back, its answer streamed as the node's tokens), a TOOL node calls one tool with templated
arguments; a failing tool fails its node with the tool's reason."""

from __future__ import annotations

import itertools

import pytest
from google.protobuf import json_format, struct_pb2

from typecase.v1 import flow_pb2, flow_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")
NAMES = itertools.count()


def struct(data: dict) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(data)
    return value


def graph(*nodes: tuple[str, int, dict]) -> flow_pb2.Graph:
    g = flow_pb2.Graph(nodes=[flow_pb2.Node(id=i, type=t, name=i, params=struct(p)) for i, t, p in nodes])
    for a, b in zip(nodes, nodes[1:]):
        g.edges.append(flow_pb2.Edge(id=f"{a[0]}-{b[0]}", source=a[0], target=b[0]))
    return g


async def run(channel, world, g: flow_pb2.Graph, inputs: dict) -> list[flow_pb2.RunFlowResponse]:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    flow = (
        await flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=f"agentic{next(NAMES)}", graph=g)),
            metadata=world.user.md,
        )
    ).flow
    return [
        r
        async for r in flows.RunFlow(
            flow_pb2.RunFlowRequest(flow_id=flow.id, inputs=struct(inputs)), metadata=world.user.md
        )
    ]


async def test_an_agent_node_runs_the_loop_and_a_tool_node_calls_one_tool(achannel, world, upstream):
    g = graph(
        ("start", flow_pb2.NODE_TYPE_START, {"variables": [{"name": "question", "type": "text"}]}),
        (
            "agent",
            flow_pb2.NODE_TYPE_AGENT,
            {
                "model_id": world.model_id,
                "query": "{{question}}",
                "instructions": "Use the tools.",
                "tool_ids": [world.add, world.list_pets],
            },
        ),
        ("tool", flow_pb2.NODE_TYPE_TOOL, {"tool_id": world.add, "arguments": {"a": "{{start.n}}", "b": 1}}),
        ("end", flow_pb2.NODE_TYPE_END, {"outputs": {"agent": "{{agent.text}}", "sum": "{{tool.text}}"}}),
    )
    g.nodes[0].params["variables"].append({"name": "n", "type": "number"})
    upstream.program(
        [{"name": "add", "arguments": {"a": 4, "b": 5}}, {"name": "listPets", "arguments": {"limit": 1}}], "answer"
    )
    responses = await run(achannel, world, g, {"question": "sum and pets", "n": 41})
    kinds = [r.event.WhichOneof("kind") for r in responses]
    assert kinds[-1] == "run_finished", responses[-1]
    outputs = json_format.MessageToDict(responses[-1].event.run_finished.outputs)
    assert outputs["agent"].startswith("Answer: 9 | ") and "Rex" in outputs["agent"]
    assert outputs["sum"] == "42"
    tokens = "".join(r.event.token.text for r in responses if kinds[responses.index(r)] == "token")
    assert tokens == outputs["agent"]
    agent_done = [
        r.event.node_finished
        for r in responses
        if r.event.WhichOneof("kind") == "node_finished" and r.event.node_finished.node_id == "agent"
    ][0]
    steps = json_format.MessageToDict(agent_done.outputs)["steps"]
    assert [s["name"] for s in steps] == ["add", "listPets"] and steps[0]["result_preview"] == "9"
    assert upstream.seen[-1].body["messages"][0] == {"role": "system", "content": "Use the tools."}


async def test_a_failing_tool_fails_its_node_with_the_tools_reason(achannel, world):
    g = graph(
        ("start", flow_pb2.NODE_TYPE_START, {"variables": [{"name": "question", "type": "text"}]}),
        ("tool", flow_pb2.NODE_TYPE_TOOL, {"tool_id": world.add, "arguments": {"a": "{{question}}"}}),
        ("end", flow_pb2.NODE_TYPE_END, {"outputs": {"sum": "{{tool.text}}"}}),
    )
    responses = await run(achannel, world, g, {"question": "not a number"})
    failed = responses[-1].event
    assert failed.WhichOneof("kind") == "run_failed"
    from google.rpc import error_details_pb2

    infos = []
    for detail in failed.run_failed.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info.reason)
    assert infos == ["TOOL_ARGUMENTS_INVALID"]
