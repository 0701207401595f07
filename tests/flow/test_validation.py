"""Validation catches each error class and names the node (and edge, and parameter) at fault."""

from __future__ import annotations

import pytest

from tests.flow.support import admin, chain, create_flow, edge, graph, node
from typecase.server.flow.graph import Graph, validate
from typecase.v1 import flow_pb2

ERROR = flow_pb2.VALIDATION_SEVERITY_ERROR


def problems(g: flow_pb2.Graph) -> list[tuple[str, str, str]]:
    """(code, node_id, param) of each error."""
    return [(p.code, p.node_id, p.param) for p in validate(Graph.from_proto(g)) if p.severity == ERROR]


def start() -> flow_pb2.Node:
    return node("start", "start", variables=[{"name": "q", "type": "text"}])


def end() -> flow_pb2.Node:
    return node("end", "end", outputs={"a": "{{q}}"})


def test_a_valid_graph_has_no_errors():
    g = chain(
        start(),
        node("p", "prompt", template="{{q}} {{sys.run_id}}"),
        node(
            "c", "condition", cases=[{"handle": "yes", "conditions": [{"left": "{{p.text}}", "op": "!=", "right": ""}]}]
        ),
        end(),
    )
    g.edges[-1].source_handle = "yes"
    g.edges.append(edge("c", "end", "else"))
    assert problems(g) == []


def test_unknown_node_type():
    g = chain(start(), flow_pb2.Node(id="mystery", type=99), end())
    assert ("UNKNOWN_NODE_TYPE", "mystery", "") in problems(g)
    g = chain(start(), flow_pb2.Node(id="unset"), end())
    assert ("UNKNOWN_NODE_TYPE", "unset", "") in problems(g)


def test_missing_required_parameters():
    g = chain(
        start(),
        node("p", "prompt"),
        node("l", "llm"),
        node("k", "knowledge_retrieval", query="x"),
        node("h", "http_request"),
        node("c", "code"),
        node("o", "output"),
        end(),
    )
    found = problems(g)
    for expected in [
        ("MISSING_PARAM", "p", "template"),
        ("MISSING_PARAM", "l", "user_prompt"),
        ("MISSING_PARAM", "k", "kb_ids"),
        ("MISSING_PARAM", "h", "url"),
        ("MISSING_PARAM", "c", "code"),
        ("MISSING_PARAM", "o", "template"),
    ]:
        assert expected in found
    g = chain(start(), node("c", "condition", cases=[{"handle": "a"}]), end())
    assert ("MISSING_PARAM", "c", "cases.0.conditions") in problems(g)
    g = chain(start(), node("i", "input", mode="form"), end())
    assert ("MISSING_PARAM", "i", "fields") in problems(g)


def test_invalid_parameters():
    g = chain(
        start(),
        node("c", "condition", cases=[{"handle": "a", "conditions": [{"left": "1", "op": "~~"}]}]),
        node("l", "llm", user_prompt="x", temperature=7),
        node("code", "code", code="def main(:"),
        end(),
    )
    found = problems(g)
    assert ("INVALID_PARAM", "c", "cases.0.conditions.0.op") in found
    assert ("INVALID_PARAM", "l", "temperature") in found
    assert ("INVALID_PARAM", "code", "code") in found


def test_dangling_edges():
    g = chain(start(), node("p", "prompt", template="x"), end())
    g.edges.append(flow_pb2.Edge(id="to-nowhere", source="p", target="ghost"))
    g.edges.append(flow_pb2.Edge(id="from-nowhere", source="ghost2", target="end"))
    found = [(p.code, p.edge_id, p.node_id) for p in validate(Graph.from_proto(g)) if p.severity == ERROR]
    assert ("DANGLING_EDGE", "to-nowhere", "p") in found and ("DANGLING_EDGE", "from-nowhere", "end") in found


def test_unreachable_nodes_and_start_rules():
    g = graph(
        [start(), node("p", "prompt", template="x"), node("island", "prompt", template="y"), end()],
        [edge("start", "p"), edge("p", "end")],
    )
    assert ("UNREACHABLE_NODE", "island", "") in problems(g)
    assert ("MISSING_START", "", "") in problems(chain(node("p", "prompt", template="x"), end()))
    two = chain(start(), node("start2", "start"), end())
    assert ("MULTIPLE_START", "start2", "") in problems(two)


def test_cycles_need_an_exit():
    # a -> b -> a with no way out: an error on the loop's first node.
    g = graph(
        [start(), node("a", "prompt", template="x"), node("b", "prompt", template="y"), end()],
        [edge("start", "a"), edge("a", "b"), edge("b", "a"), edge("b", "end")],
    )
    assert ("CYCLE", "a", "") in problems(g)
    # A condition leaving the loop is an exit.
    g = graph(
        [
            start(),
            node("a", "prompt", template="x"),
            node("c", "condition", cases=[{"handle": "again", "expression": "len(a.text) < 3"}]),
            end(),
        ],
        [edge("start", "a"), edge("a", "c"), edge("c", "a", "again"), edge("c", "end", "else")],
    )
    assert problems(g) == []
    # So is a node waiting for a person (a dialog loop).
    g = graph(
        [start(), node("ask", "input", prompt="?"), node("say", "output", template="{{ask.text}}")],
        [edge("start", "ask"), edge("ask", "say"), edge("say", "ask")],
    )
    assert problems(g) == []
    # A self-loop without exit.
    g = graph(
        [start(), node("a", "prompt", template="x"), end()], [edge("start", "a"), edge("a", "a"), edge("a", "end")]
    )
    assert ("CYCLE", "a", "") in problems(g)


def test_undefined_variables_in_templates():
    g = chain(
        start(),
        node("p", "prompt", template="{{q}} {{nobody}}"),
        node("l", "llm", user_prompt="{{p.txt}}"),
        node("o", "output", template="{{later.text}}"),
        node("later", "prompt", template="{{sys.nope}}"),
        end(),
    )
    found = problems(g)
    assert ("UNKNOWN_VARIABLE", "p", "template") in found  # not a node, input or sys
    assert ("UNKNOWN_VARIABLE", "l", "user_prompt") in found  # p has no output "txt"
    assert ("UNKNOWN_VARIABLE", "o", "template") in found  # "later" runs after "o"
    assert ("UNKNOWN_VARIABLE", "later", "template") in found
    # Loop variables and sets are not undefined; conditions' expressions are checked too.
    g = chain(
        start(),
        node("k", "knowledge_retrieval", kb_ids=["x"], query="{{q}}"),
        node("p", "prompt", template="{% for c in k.citations %}{{c.text}}{% endfor %}{% set n = 1 %}{{n}}"),
        node("c", "condition", cases=[{"handle": "h", "expression": "missing.count > 1"}]),
        end(),
    )
    g.edges[-1].source_handle = "h"
    assert problems(g) == [("UNKNOWN_VARIABLE", "c", "cases.0.expression")]


def test_syntax_errors_in_templates_and_expressions():
    g = chain(
        start(),
        node("p", "prompt", template="{{ q "),
        node("c", "condition", cases=[{"handle": "h", "expression": "__import__('os')"}]),
        end(),
    )
    g.edges[-1].source_handle = "h"
    found = problems(g)
    assert ("INVALID_TEMPLATE", "p", "template") in found
    assert ("INVALID_EXPRESSION", "c", "cases.0.expression") in found


def test_branch_handles():
    g = chain(start(), node("c", "condition", cases=[{"handle": "yes", "expression": "q == 'y'"}]), end())
    assert [(p.code, p.node_id, p.edge_id) for p in validate(Graph.from_proto(g)) if p.severity == ERROR] == [
        ("UNKNOWN_HANDLE", "c", "c-end")
    ]
    g.edges[-1].source_handle = "maybe"
    assert ("UNKNOWN_HANDLE", "c", "") in problems(g)


def test_node_ids():
    g = chain(start(), node("bad-id", "prompt", template="x"), node("sys", "prompt", template="y"), end())
    found = problems(g)
    assert ("INVALID_NODE_ID", "bad-id", "") in found and ("INVALID_NODE_ID", "sys", "") in found
    g = chain(start(), node("p", "prompt", template="x"), node("p", "prompt", template="y"), end())
    assert ("DUPLICATE_NODE_ID", "p", "") in problems(g)


@pytest.mark.asyncio(loop_scope="package")
async def test_validate_rpc_checks_saved_and_unsaved_graphs_and_models(fchannel):
    root = admin(fchannel)
    flow = await create_flow(root, "validated", chain(start(), node("p", "prompt", template="{{q}}"), end()))
    reply = await root.flow.ValidateFlow(flow_pb2.ValidateFlowRequest(flow_id=flow.id), metadata=root.md)
    assert reply.valid and all(p.severity != ERROR for p in reply.problems)
    unsaved = chain(
        start(), node("l", "llm", user_prompt="{{q}}", model_id="01NOSUCHMODEL0000000000000"), node("p", "prompt")
    )
    reply = await root.flow.ValidateFlow(flow_pb2.ValidateFlowRequest(flow_id=flow.id, graph=unsaved), metadata=root.md)
    assert not reply.valid
    codes = [(p.code, p.node_id) for p in reply.problems]
    assert ("MODEL_NOT_FOUND", "l") in codes and ("MISSING_PARAM", "p") in codes
    assert ("MISSING_END", "") in codes  # a warning, listed after the errors
    assert reply.problems[-1].severity == flow_pb2.VALIDATION_SEVERITY_WARNING


@pytest.mark.asyncio(loop_scope="package")
async def test_code_longer_than_the_limit_is_refused_before_validation_compiles_it(fchannel):
    import grpc

    root = admin(fchannel)
    limit = 100_000  # flow_code_max_chars' default
    at_limit = "def main(**inputs):\n    return {}\n" + "#" * (limit - 34)
    assert len(at_limit) == limit
    await create_flow(root, "code at the limit", chain(start(), node("c", "code", code=at_limit), end()))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_flow(root, "code over the limit", chain(start(), node("c", "code", code=at_limit + "#"), end()))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "flow_code_max_chars" in refused.value.details() and "params.code" in refused.value.details()
