"""The safety-critical pieces on their own: condition expressions, templates, the SSRF policy, and the scheduler's
branch, join and loop rules."""

from __future__ import annotations

import ipaddress

import pytest

from tests.flow.support import edge, graph, node
from typecase.server.config import Settings
from typecase.server.flow import expr, templates
from typecase.server.flow.engine.state import RunState
from typecase.server.flow.graph import Graph
from typecase.server.flow.nodes.http import Blocked, HttpGuard

SCOPE = {"kr": {"count": 2, "chunks": [{"text": "a"}]}, "llm": {"text": "Yes, it is"}, "n": "12"}


@pytest.mark.parametrize(
    "source, expected",
    [
        ("kr.count > 0 and 'yes' in lower(llm.text)", True),
        ("kr.chunks[0].text == 'a'", True),
        ("n > 10", True),  # numeric text compares as a number against a number
        ("n == 12", True),
        ("len(kr.chunks) + 1", 2),
        ("missing.count is None", True),
        ("matches(llm.text, '^Yes')", True),
        ("'x' if kr.count > 5 else 'y'", "y"),
    ],
)
def test_expressions_evaluate(source, expected):
    assert expr.evaluate(source, SCOPE) == expected


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "llm.__class__",
        "().__class__.__bases__",
        "open('/etc/passwd')",
        "[x for x in range(3)]",
        "lambda: 1",
        "eval('1')",
        "kr.count.__add__(1)",
        "'a' * 10**9",
    ],
)
def test_expressions_refuse_anything_else(source):
    with pytest.raises(expr.ExpressionError):
        expr.evaluate(source, SCOPE)


def test_templates_resolve_references_and_refuse_internals():
    scope = {"kr": {"citations": [{"file_name": "f.txt"}]}, "q": "hi"}
    assert templates.resolve("{{kr.citations}}", scope) == [{"file_name": "f.txt"}]  # keeps its type
    assert templates.resolve("{{ kr.citations[0].file_name }}", scope) == "f.txt"
    assert templates.resolve({"a": ["{{q}}!"]}, scope) == {"a": ["hi!"]}
    assert templates.render("{{ nothing.deep.down }}", scope) == ""
    assert templates.render("{{ q.__class__.__mro__ }}", scope) == ""  # internals read as undefined
    for source in (
        "{{ q.__class__.__mro__[1].__subclasses__() }}",
        "{{ range(10**7)|list }}",
        "{{ 'x' * 10**8 }}",
        "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
    ):
        with pytest.raises(templates.TemplateFailed):
            templates.render(source, scope)
    refs = templates.references("{{ a.b }} {{ c['d'] }} {% for x in e %}{{ x.y }}{% endfor %}")
    assert {(r.name, r.key) for r in refs} == {("a", "b"), ("c", "d"), ("e", None)}


def test_the_ssrf_policy(tmp_path):
    strict = HttpGuard(Settings(_env_file=None, data_dir=tmp_path))
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "::ffff:127.0.0.1",
    ):
        assert not strict.policy.address_allowed(ipaddress.ip_address(address)), address
    assert strict.policy.address_allowed(ipaddress.ip_address("93.184.216.34"))
    relaxed = HttpGuard(
        Settings(
            _env_file=None, data_dir=tmp_path, flow_http_allowed_hosts=["10.0.0.0/8", "internal.example", "*.svc.local"]
        )
    )
    assert relaxed.policy.address_allowed(ipaddress.ip_address("10.9.9.9"))
    assert not relaxed.policy.address_allowed(ipaddress.ip_address("192.168.0.1"))
    assert relaxed.policy.host_allowed("internal.example") and relaxed.policy.host_allowed("api.svc.local")
    assert not relaxed.policy.host_allowed("svc.local.evil.com")


async def test_the_guard_resolves_names_before_connecting(tmp_path):
    guard = HttpGuard(Settings(_env_file=None, data_dir=tmp_path))
    try:
        with pytest.raises(Blocked):
            await guard.resolve("localhost", 80)
        with pytest.raises(Blocked):
            await guard.resolve("127.0.0.1", 80)
    finally:
        await guard.aclose()


def run_through(g: Graph, handles: dict[str, list[str] | None]) -> list[str]:
    """The order the scheduler runs nodes in, each taking the given branch handles (None: all edges)."""
    state = RunState.initial(g)
    order = []
    while state.ready:
        node_id = state.take_ready()
        order.append(node_id)
        if len(order) > 50:
            break
        chosen = handles.get(node_id)
        state.complete(g, node_id, {}, chosen(order) if callable(chosen) else chosen)
    return order


def test_scheduler_branches_joins_and_loops():
    diamond = Graph.from_proto(
        graph(
            [
                node("s", "start"),
                node("a", "prompt", template="x"),
                node("b", "prompt", template="x"),
                node("c", "condition", cases=[{"handle": "y", "expression": "True"}]),
                node("j", "prompt", template="x"),
                node("e", "end"),
            ],
            [
                edge("s", "a"),
                edge("s", "b"),
                edge("s", "c"),
                edge("a", "j"),
                edge("b", "j"),
                edge("c", "j", "y"),
                edge("c", "e", "else"),
                edge("j", "e"),
            ],
        )
    )
    # The join waits for every way in; a skipped way in does not block it.
    assert run_through(diamond, {"c": ["y"]}) == ["s", "a", "b", "c", "j", "e"]
    assert run_through(diamond, {"c": ["else"]}) == ["s", "a", "b", "c", "j", "e"]
    only_else = Graph.from_proto(
        graph(
            [
                node("s", "start"),
                node("c", "condition", cases=[{"handle": "y", "expression": "True"}]),
                node("y", "prompt", template="x"),
                node("after_y", "prompt", template="x"),
                node("e", "end"),
            ],
            [edge("s", "c"), edge("c", "y", "y"), edge("y", "after_y"), edge("c", "e", "else"), edge("after_y", "e")],
        )
    )
    state = RunState.initial(only_else)
    state.complete(only_else, state.take_ready(), {}, None)
    skipped = state.complete(only_else, state.take_ready(), {}, ["else"])
    assert skipped == ["y", "after_y"] and state.ready == ["e"]  # skips propagate, the end still runs

    loop = Graph.from_proto(
        graph(
            [
                node("s", "start"),
                node("body", "prompt", template="x"),
                node("c", "condition", cases=[{"handle": "again", "expression": "True"}]),
                node("e", "end"),
            ],
            [edge("s", "body"), edge("body", "c"), edge("c", "body", "again"), edge("c", "e", "else")],
        )
    )
    rounds = iter([["again"], ["again"], ["else"]])
    assert run_through(loop, {"c": lambda order: next(rounds)}) == ["s", "body", "c", "body", "c", "body", "c", "e"]
    state = RunState.from_dict(RunState.initial(loop).to_dict())  # the checkpoint round-trips
    assert state.ready == ["s"]
