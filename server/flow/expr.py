"""Condition expressions: a small, safe subset of Python expressions, evaluated by walking a whitelisted AST.

Nothing is ever passed to eval/exec/compile-for-exec. Allowed: literals (numbers, strings, True/False/None, lists,
tuples, dicts), variable names (run inputs and node ids), attribute access and subscripts on data (dict keys, list
indexes; never attributes of Python objects), comparisons (== != < <= > >= in, not in, is None, is not None),
and/or/not, arithmetic (+ - * / // % with size limits), a conditional (`a if c else b`) and a few pure functions
(len, str, int, float, bool, abs, min, max, round, lower, upper, strip, contains, startswith, endswith, matches).

`matches(text, pattern)` takes an RE2 pattern (infra/user_regex.py: linear time, no lookarounds or
backreferences); a constant pattern is checked when the expression is parsed, and an expression that calls
matches() is evaluated in a worker process with a deadline (flow/workers.py).
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable
from typing import Any

from typecase.server.infra import user_regex

MAX_EXPRESSION_CHARS = 2000
MAX_VALUE_ITEMS = 100_000
MAX_REGEX_CHARS = 500


class ExpressionError(ValueError):
    """An expression that does not parse, uses something not allowed, or fails when evaluated."""


def _compile(pattern: Any):
    check_pattern(pattern)
    return user_regex.compile(str(pattern))


def check_pattern(pattern: Any) -> None:
    """Raise ExpressionError unless `pattern` can be used by matches()."""
    pattern = str(pattern)
    if len(pattern) > MAX_REGEX_CHARS:
        raise ExpressionError(f"regular expression longer than {MAX_REGEX_CHARS} characters")
    try:
        user_regex.check(pattern)
    except user_regex.PatternError as exc:
        raise ExpressionError(f"regular expression {pattern!r}: {exc}") from None


def _matches(text: Any, pattern: Any) -> bool:
    return _compile(pattern).search(str(text)) is not None


def _num(value: Any) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ExpressionError(f"not a number: {value!r}") from None
    return int(number) if number.is_integer() else number


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "str": lambda v="": "" if v is None else str(v),
    "int": lambda v=0: int(_num(v)),
    "float": lambda v=0.0: float(_num(v)),
    "number": _num,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "strip": lambda v: str(v).strip(),
    "contains": lambda a, b: str(b) in str(a) if not isinstance(a, (list, dict)) else b in a,
    "startswith": lambda a, b: str(a).startswith(str(b)),
    "endswith": lambda a, b: str(a).endswith(str(b)),
    "matches": _matches,
}

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else 1


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        repeated = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
        if repeated and _size(seq) * max(times, 0) > MAX_VALUE_ITEMS:
            raise ExpressionError("repetition too large")
    return a * b


def _add(a: Any, b: Any) -> Any:
    if _size(a) + _size(b) > MAX_VALUE_ITEMS:
        raise ExpressionError("value too large")
    return a + b


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: lambda a, b: a % b if not isinstance(a, str) else _refuse("string formatting"),
}


def _refuse(what: str) -> Any:
    raise ExpressionError(f"{what} is not allowed")


class _Checker(ast.NodeVisitor):
    """Refuses any node outside the whitelist before evaluation."""

    ALLOWED = (
        ast.Expression,
        ast.BoolOp,
        ast.And,
        ast.Or,
        ast.UnaryOp,
        ast.Not,
        ast.USub,
        ast.UAdd,
        ast.BinOp,
        ast.Compare,
        ast.Constant,
        ast.Name,
        ast.Load,
        ast.Attribute,
        ast.Subscript,
        ast.List,
        ast.Tuple,
        ast.Dict,
        ast.IfExp,
        ast.Call,
        *_COMPARE,
        *_BINARY,
    )

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, self.ALLOWED):
            raise ExpressionError(f"{type(node).__name__} is not allowed in a condition")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError("names starting with '_' are not allowed")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError("names starting with '_' are not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise ExpressionError("only these functions can be called: " + ", ".join(sorted(FUNCTIONS)))
            if node.func.id == "matches" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
                check_pattern(node.args[1].value)
            for arg in node.args:
                self.visit(arg)
            return
        super().generic_visit(node)


@functools.lru_cache(maxsize=1024)
def parse(source: str) -> ast.Expression:
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}") from None
    _Checker().visit(tree)
    return tree


def uses_regex(source: str) -> bool:
    """Whether the expression calls matches() (and so is evaluated in a worker process)."""
    return any(
        isinstance(node, ast.Call) and node.func.id == "matches"  # type: ignore[attr-defined]
        for node in ast.walk(parse(source))
    )


def names(source: str) -> list[tuple[str, str | None]]:
    """(variable, first key under it) for every variable the expression reads (functions excluded)."""
    tree = parse(source)
    found: dict[tuple[str, str | None], None] = {}
    keyed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            found[(node.value.id, node.attr)] = None
            keyed.add(id(node.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            index = node.slice
            key = index.value if isinstance(index, ast.Constant) and isinstance(index.value, str) else None
            found[(node.value.id, key)] = None
            keyed.add(id(node.value))
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in keyed and id(node) not in callees:
            if node.id not in ("True", "False", "None"):
                found[(node.id, None)] = None
    return list(found)


def evaluate(source: str, scope: dict[str, Any]) -> Any:
    tree = parse(source)
    try:
        return _eval(tree.body, scope)
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError("expression too deeply nested") from None
    except Exception as exc:
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None


def _get(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, (list, tuple, str)) and isinstance(key, int):
        return value[key] if -len(value) <= key < len(value) else None
    return None


def _eval(node: ast.AST, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return scope.get(node.id)
    if isinstance(node, ast.Attribute):
        return _get(_eval(node.value, scope), node.attr)
    if isinstance(node, ast.Subscript):
        return _get(_eval(node.value, scope), _eval(node.slice, scope))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, scope)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, scope)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, scope)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, ast.USub):
            return -_num(operand)
        return +_num(operand)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, scope), _eval(node.right, scope))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, scope)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, scope)
            if not compare(type(op), left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, scope) if _eval(node.test, scope) else _eval(node.orelse, scope)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(item, scope) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ExpressionError("** is not allowed in a condition")
        return {_eval(k, scope): _eval(v, scope) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):  # the checker allows no other callee
        return FUNCTIONS[node.func.id](*(_eval(arg, scope) for arg in node.args))
    raise ExpressionError(f"{type(node).__name__} is not allowed in a condition")


def compare(op: type, left: Any, right: Any) -> bool:
    """Comparison with one convenience: ordering a number against numeric text compares numbers."""
    if op in (ast.Lt, ast.LtE, ast.Gt, ast.GtE) and (isinstance(left, str) != isinstance(right, str)):
        left, right = _num(left), _num(right)
    if op in (ast.In, ast.NotIn) and isinstance(right, str) and not isinstance(left, str):
        left = str(left)
    if op in (ast.Eq, ast.NotEq) and isinstance(left, (int, float)) != isinstance(right, (int, float)):
        try:  # "3" == 3 is true in a condition: values from templates are text
            left, right = _num(left), _num(right)
        except ExpressionError:
            pass
    return _COMPARE[op](left, right)
