"""Flow runs through the SDK: a run that pauses for input, answered with submit_input, and followed again from a
seq with resume."""

from __future__ import annotations

from typing import Any

import pytest

from typecase.client import NotFound, RunEvent
from typecase.v1 import flow_pb2


def node(node_id: str, kind: str, **params: Any) -> flow_pb2.Node:
    message = flow_pb2.Node(id=node_id, type=flow_pb2.NodeType.Value(f"NODE_TYPE_{kind.upper()}"), name=node_id)
    message.params.update(params)
    return message


def chain(*nodes: flow_pb2.Node) -> flow_pb2.Graph:
    edges = [flow_pb2.Edge(id=f"{a.id}-{b.id}", source=a.id, target=b.id) for a, b in zip(nodes, nodes[1:])]
    return flow_pb2.Graph(nodes=list(nodes), edges=edges)


def seqs(events: list[RunEvent]) -> list[int]:
    return [e.seq for e in events]


def test_run_pause_answer_and_resume(client):
    graph = chain(
        node("start", "start"),
        node("ask", "input", mode="form", prompt="Who?", fields=[{"name": "name", "required": True}]),
        node("greet", "prompt", template="Hello {{ask.name}}"),
        node("end", "end", outputs={"greeting": "{{greet.text}}"}),
    )
    flow = client.flows.create_flow("sdk greeter", graph=graph)

    stream = client.flows.run(flow.id)
    first = list(stream)
    assert first[0].kind == "run_started" and first[-1].kind == "input_required"
    assert stream.run_id == first[0].run_id and stream.input_required is not None
    assert stream.input_required.node_id == "ask" and stream.finished is None

    answered = client.flows.submit_input(stream.run_id, "ask", {"name": "Ada"})
    state = answered.collect()
    assert state.finished is not None and state.finished.status == flow_pb2.RUN_STATUS_FINISHED
    assert dict(state.finished.outputs) == {"greeting": "Hello Ada"}
    assert client.flows.get_run(stream.run_id).status == flow_pb2.RUN_STATUS_FINISHED

    replay = list(client.flows.resume(stream.run_id, after_seq=first[1].seq))
    order = seqs(first[:2] + replay)
    assert all(a < b for a, b in zip(order, order[1:])) and order[-1] == answered.last_seq
    assert [e.kind for e in replay][-1] == "run_finished"
    assert "input_required" in [e.kind for e in replay]  # the replay runs through the pause

    with pytest.raises(NotFound):
        client.flows.get_run("01NOTARUN")
