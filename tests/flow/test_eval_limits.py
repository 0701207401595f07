"""Templates and regex conditions are evaluated in worker processes (flow/workers.py) and each limit holds at its
value: a hostile template or regex ends in an error that names the setting it ran into, within its deadline."""

from __future__ import annotations

import random
import time

import pytest

from tests.flow.support import chain, edge, node
from typecase.server.flow import expr
from typecase.server.flow.graph import Graph, validate
from typecase.server.flow.templates import Limits, TemplateFailed
from typecase.server.flow.workers import FlowWorkers
from typecase.v1 import flow_pb2

LIMITS = Limits(
    timeout_seconds=1.0,
    max_chars=2_000,
    max_output_chars=50_000,
    max_string_chars=20_000,
    max_list_items=1_000,
    max_range_items=500,
)


@pytest.fixture
async def workers():
    made = FlowWorkers(LIMITS, condition_seconds=1.0, workers=1, memory_bytes=128 << 20)
    assert await made.render("{{ 1 }}", {}) == "1"  # the worker is started (outside any deadline) before timing
    yield made
    await made.close()


@pytest.mark.parametrize(
    "source, setting",
    [
        (
            "{% for i in range(500) %}{% for j in range(500) %}{% for k in range(500) %}{% endfor %}{% endfor %}"
            "{% endfor %}",
            "flow_template_timeout_seconds",
        ),
        (
            '{% set ns = namespace(s="x") %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}',
            "flow_template_max_string_chars",
        ),
        (
            '{% set ns = namespace(s="x") %}{% for i in range(20) %}{% set ns.s = ns.s + ns.s %}{% endfor %}',
            "flow_template_max_string_chars",
        ),
        ("{{ 'ab' * 10001 }}", "flow_template_max_string_chars"),
        ("{{ 'a'|replace('a', 'b' * 15000)|replace('b', 'cc') }}", "flow_template_max_string_chars"),
        ("{{ 'x'.ljust(20001) }}", "flow_template_max_string_chars"),
        ("{{ (range(500)|list) * 3 }}", "flow_template_max_list_items"),
        ("{% set l = [1] %}{% for i in range(12) %}{{ l.extend(l) }}{% endfor %}", "flow_template_max_list_items"),
        ("{{ range(501)|list }}", "flow_template_max_range_items"),
        ("{% for i in range(500) %}{{ 'y' * 200 }}{% endfor %}", "flow_template_max_output_chars"),
        ("{{ q }}" + " " * 2_000, "flow_template_max_chars"),
    ],
)
async def test_a_hostile_template_fails_naming_the_limit(workers, source, setting):
    started = time.perf_counter()
    with pytest.raises(TemplateFailed, match=setting):
        await workers.render(source, {"q": "hi"})
    assert time.perf_counter() - started < LIMITS.timeout_seconds + 3  # loose for a loaded CI machine


@pytest.mark.parametrize(
    "source, expected",
    [
        ("{{ 'x' * 20000 }}", 20_000),  # a string of exactly max_string_chars
        ("{{ (range(500)|list + range(500)|list)|length }}", 4),  # a list of exactly max_list_items
        ("{{ range(500)|list|length }}", 3),  # range() of exactly max_range_items
        ("{% for i in range(250) %}{{ 'y' * 200 }}{% endfor %}", 50_000),  # output of exactly max_output_chars
        ("{{ q }}" + " " * (2_000 - 7), 2 + 2_000 - 7),  # a template of exactly max_chars
    ],
)
async def test_a_template_at_each_limit_renders(workers, source, expected):
    assert len(await workers.render(source, {"q": "hi"})) == expected


async def test_templates_render_in_a_worker_with_only_the_variables_they_name(workers):
    scope = {"q": "hi", "kr": {"citations": [{"file_name": "f.txt"}]}, "secret": "not sent"}
    assert await workers.render("{{ q }} {{ kr.citations[0].file_name }}", scope) == "hi f.txt"
    assert await workers.resolve({"a": ["{{q}}!", "{{kr.citations}}"]}, scope) == {
        "a": ["hi!", [{"file_name": "f.txt"}]]
    }
    assert await workers.render("{{ secret|default('absent') }}{{ self }}", {"secret": "x"}) != "x"
    assert await workers.render("no template here", {}) == "no template here"


async def test_a_template_that_needs_too_much_memory_fails_naming_the_limit():
    roomy = Limits(max_string_chars=10**9, max_output_chars=10**9)
    made = FlowWorkers(roomy, condition_seconds=1.0, workers=1, memory_bytes=64 << 20)
    try:
        with pytest.raises(TemplateFailed, match="flow_eval_memory_bytes"):
            await made.render("{{ ('x' * 300000000)|length }}", {})
        assert await made.render("{{ 1 + 1 }}", {}) == "2"  # a fresh worker
    finally:
        await made.close()


async def test_a_regex_that_defeats_re2s_dfa_is_stopped_at_the_condition_deadline(workers):
    rng = random.Random(7)
    text = "".join(rng.choice("ab") for _ in range(1_000_000))
    pattern = "(?:[ab]{0,40}a){1,20}x"  # linear in RE2, but ~13 s over this megabyte
    started = time.perf_counter()
    with pytest.raises(expr.ExpressionError, match="flow_condition_timeout_seconds"):
        await workers.matches(text, pattern)
    assert time.perf_counter() - started < 1.0 + 3  # ~13 s without the deadline; loose for a loaded CI machine
    with pytest.raises(expr.ExpressionError, match="flow_condition_timeout_seconds"):
        await workers.evaluate(f"matches(t, '{pattern}')", {"t": text})
    assert await workers.matches("order 555-1234", r"\d{3}-\d{4}") is True
    assert await workers.evaluate("matches(t, '^(a+)+$')", {"t": "a" * 40 + "!"}) is False
    assert await workers.evaluate("len(t) > 3", {"t": "abcd"}) is True  # no regex: evaluated in place


@pytest.mark.parametrize(
    "pattern, why",
    [
        ("(?=a)b", "lookahead"),
        ("a(?<!b)", "lookbehind"),
        (r"(a)\1", "backreferences"),
        ("a++", "possessive"),
        ("x{2000}", "at most 1000"),
        ("(", "not a valid regular expression"),
        ("a" * 501, "longer than 500 characters"),
    ],
)
def test_an_unusable_pattern_is_refused_with_the_reason(pattern, why):
    with pytest.raises(expr.ExpressionError, match=why):
        expr.check_pattern(pattern)
    with pytest.raises(expr.ExpressionError, match=why):
        expr.parse(f"matches(x, {pattern!r})")  # a constant pattern is checked when the expression is parsed


def test_validation_names_the_param_of_an_unusable_pattern():
    cases = [
        {"handle": "a", "conditions": [{"left": "{{q}}", "op": "matches", "right": "x(?=y)"}]},
        {"handle": "b", "conditions": [{"left": "{{q}}", "op": "matches", "right": "{{q}}"}]},  # a template
        {"handle": "c", "expression": "matches(q, '(a)\\\\1')"},
        {"handle": "d", "conditions": [{"left": "{{q}}", "op": "matches", "right": "^(a+)+$"}]},
    ]
    g = chain(
        node("start", "start", variables=[{"name": "q", "type": "text"}]),
        node("c", "condition", cases=cases),
        node("end", "end"),
    )
    g.edges[-1].source_handle = "a"
    g.edges.extend([edge("c", "end", handle) for handle in ("b", "c", "d", "else")])
    found = [
        (p.code, p.param, p.message)
        for p in validate(Graph.from_proto(g))
        if p.severity == flow_pb2.VALIDATION_SEVERITY_ERROR
    ]
    assert [(code, param) for code, param, _ in found] == [
        ("INVALID_PARAM", "cases.0.conditions.0.right"),
        ("INVALID_EXPRESSION", "cases.2.expression"),
    ]
    assert "lookahead (?=...) is not supported" in found[0][2] and "backreferences" in found[1][2]


def test_validation_refuses_a_template_longer_than_the_limit_naming_it():
    g = chain(node("start", "start"), node("p", "prompt", template="{{ sys.run_id }}" + "x" * 100), node("end", "end"))
    found = [
        (p.code, p.param, p.message)
        for p in validate(Graph.from_proto(g), template_limits=Limits(max_chars=100))
        if p.severity == flow_pb2.VALIDATION_SEVERITY_ERROR
    ]
    assert found == [("INVALID_TEMPLATE", "template", "template longer than 100 characters (flow_template_max_chars)")]
    assert not [p for p in validate(Graph.from_proto(g)) if p.severity == flow_pb2.VALIDATION_SEVERITY_ERROR]


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",  # prints nothing
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",  # no loop
    ],
    ids=["nested loops", "recursive macro"],
)
def test_rendering_in_place_stops_at_the_deadline_too(source):
    from typecase.server.flow import templates

    started = time.perf_counter()
    with pytest.raises(TemplateFailed, match="flow_template_timeout_seconds"):
        templates.render(source, {}, Limits(timeout_seconds=0.3))
    assert time.perf_counter() - started < 0.3 + 3  # unbounded: minutes; loose for a loaded CI machine
