"""Condition: picks one branch. {"cases": [{"handle", "conditions": [{"left", "op", "right"}], "logic": "and" |
"or"}, or {"handle", "expression": "kr.count > 0 and 'yes' in lower(llm.text)"}]}. The first case that holds
wins; none holding takes "else". Edges leave through Edge.source_handle = the case handle or "else".

`left`/`right` are values or templates (a whole reference keeps its type); `expression` is a safe expression
(server/flow/expr.py), never Python eval. `matches` takes an RE2 pattern (no lookarounds or backreferences: see
infra/user_regex.py), checked at validation when it is not a template; matching, and expressions that call
matches(), run in a worker process with a deadline (flow/workers.py), never on the event loop."""

from __future__ import annotations

import ast
import re
from typing import Any

from typecase.server.flow import expr, templates
from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, node_error
from typecase.v1 import flow_pb2

ELSE = "else"
HANDLE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

_ORDER = {"==": ast.Eq, "!=": ast.NotEq, ">": ast.Gt, ">=": ast.GtE, "<": ast.Lt, "<=": ast.LtE}
ALIASES = {
    "eq": "==",
    "equals": "==",
    "ne": "!=",
    "not_equals": "!=",
    "gt": ">",
    "gte": ">=",
    "ge": ">=",
    "lt": "<",
    "lte": "<=",
    "le": "<=",
    "=": "==",
}
UNARY = {"is_empty", "is_not_empty", "is_true", "is_false"}
OPS = set(_ORDER) | UNARY | {"contains", "not_contains", "starts_with", "ends_with", "in", "not_in", "matches"}


def normalise_op(op: Any) -> str:
    op = str(op or "").strip().lower()
    return ALIASES.get(op, op)


def _empty(value: Any) -> bool:
    return value is None or (
        isinstance(value, (str, list, dict)) and len(value if not isinstance(value, str) else value.strip()) == 0
    )


def check(op: str, left: Any, right: Any) -> bool:
    if op in _ORDER:
        return expr.compare(_ORDER[op], left, right)
    if op == "is_empty":
        return _empty(left)
    if op == "is_not_empty":
        return not _empty(left)
    if op == "is_true":
        return left is True or str(left).strip().lower() == "true"
    if op == "is_false":
        return left is False or str(left).strip().lower() in ("false", "")
    if op in ("contains", "not_contains"):
        found = (right in left) if isinstance(left, (list, dict)) else (str(right) in str(left or ""))
        return found if op == "contains" else not found
    if op == "starts_with":
        return str(left or "").startswith(str(right))
    if op == "ends_with":
        return str(left or "").endswith(str(right))
    if op in ("in", "not_in"):
        found = (left in right) if isinstance(right, (list, dict)) else (str(left) in str(right or ""))
        return found if op == "in" else not found
    if op == "matches":
        return expr.FUNCTIONS["matches"](left, right)
    raise ValueError(f"unknown operator {op!r}")


def cases(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in params.get("cases") or [] if isinstance(c, dict)]


class Condition(NodeSpec):
    type = flow_pb2.NODE_TYPE_CONDITION
    kind = "condition"
    branches = True

    def validate(self, params):
        problems = []
        given = params.get("cases")
        if not given:
            return [Problem("MISSING_PARAM", "parameter 'cases' is required", "cases")]
        seen = set()
        for i, case in enumerate(given):
            if not isinstance(case, dict):
                problems.append(Problem("INVALID_PARAM", "a case must be an object", f"cases.{i}"))
                continue
            handle = str(case.get("handle") or "")
            if not HANDLE.match(handle) or handle == ELSE:
                problems.append(
                    Problem(
                        "INVALID_PARAM",
                        "a case needs a handle (letters, digits, _ or -), not 'else'",
                        f"cases.{i}.handle",
                    )
                )
            elif handle in seen:
                problems.append(Problem("INVALID_PARAM", f"handle {handle!r} is used twice", f"cases.{i}.handle"))
            seen.add(handle)
            if case.get("expression"):
                continue  # parsed by the graph validator with the variable check
            conditions = case.get("conditions")
            if not conditions:
                problems.append(
                    Problem("MISSING_PARAM", "a case needs conditions or an expression", f"cases.{i}.conditions")
                )
                continue
            if str(case.get("logic") or "and").lower() not in ("and", "or"):
                problems.append(Problem("INVALID_PARAM", "logic must be and or or", f"cases.{i}.logic"))
            for j, cond in enumerate(conditions):
                if not isinstance(cond, dict):
                    problems.append(
                        Problem("INVALID_PARAM", "a condition must be an object", f"cases.{i}.conditions.{j}")
                    )
                    continue
                op = normalise_op(cond.get("op"))
                if op not in OPS:
                    problems.append(
                        Problem("INVALID_PARAM", f"unknown operator {cond.get('op')!r}", f"cases.{i}.conditions.{j}.op")
                    )
                pattern = cond.get("right")
                if op == "matches" and not (isinstance(pattern, str) and templates.has_template(pattern)):
                    try:
                        expr.check_pattern("" if pattern is None else pattern)
                    except expr.ExpressionError as exc:
                        problems.append(Problem("INVALID_PARAM", str(exc), f"cases.{i}.conditions.{j}.right"))
                if "left" not in cond:
                    problems.append(
                        Problem("MISSING_PARAM", "a condition needs 'left'", f"cases.{i}.conditions.{j}.left")
                    )
        return problems

    def outputs(self, params):
        return {"branch"}

    def handles(self, params):
        return {str(c.get("handle")) for c in cases(params) if c.get("handle")} | {ELSE}

    def template_params(self, params):
        found = []
        for i, case in enumerate(cases(params)):
            for j, cond in enumerate(case.get("conditions") or []):
                if isinstance(cond, dict):
                    for key in ("left", "right"):
                        if isinstance(cond.get(key), str):
                            found.append((f"cases.{i}.conditions.{j}.{key}", cond[key]))
        return found

    def expression_params(self, params):
        return [
            (f"cases.{i}.expression", str(c["expression"])) for i, c in enumerate(cases(params)) if c.get("expression")
        ]

    async def run(self, ctx: NodeContext) -> NodeResult:
        evaluated = []
        workers = ctx.services.pool
        for i, case in enumerate(cases(ctx.params)):
            handle = str(case.get("handle"))
            try:
                if case.get("expression"):
                    held = bool(await workers.evaluate(str(case["expression"]), ctx.scope))
                else:
                    results = []
                    for cond in case.get("conditions") or []:
                        op = normalise_op(cond.get("op"))
                        left = await ctx.resolve_async(cond.get("left"))
                        right = await ctx.resolve_async(cond.get("right")) if op not in UNARY else None
                        results.append(
                            await workers.matches(left, right) if op == "matches" else check(op, left, right)
                        )
                    logic = str(case.get("logic") or "and").lower()
                    held = any(results) if logic == "or" else all(results)
            except (expr.ExpressionError, ValueError, TypeError) as exc:
                raise node_error(f"case {handle!r}: {exc}", ctx.node_id, param=f"cases.{i}") from None
            evaluated.append({"handle": handle, "result": held})
            if held:
                return NodeResult(outputs={"branch": handle}, inputs={"cases": evaluated}, handles=[handle])
        return NodeResult(outputs={"branch": ELSE}, inputs={"cases": evaluated}, handles=[ELSE])
