"""Milvus boolean filter expressions, the subset Typecase writes, evaluated over the rows of the embedded store.

Callers of the VectorStore write Milvus expressions (`file_id in ["a", "b"]`, `kb_id == "x"`,
`metadata["tag"] == "even"`, joined with and/or/not). Those are valid Python expressions too, so Python's own
parser (`ast`) reads them and only a whitelist of node kinds is accepted: nothing is ever evaluated as code. An
unsupported expression is a ValueError naming what is not supported, never a silently wrong match.

Evaluation is vectorised: a string field compared with `==`, `!=`, `in`, `not in` uses a dictionary-encoded
column (an int32 code per row, built once per field and extended on writes), so `file_id not in [...]` over 100k
rows is one `numpy.isin` (~0.3 ms) instead of a Python loop; `file_id in [5 files]` (the RAG case) does not scan
at all: the column also lists the slots of each value, so the rows come straight from those lists and the cost
follows the files' size, not the collection's. Other comparisons fall back to a loop over the rows.
Milvus semantics kept: a row without the field does not match a comparison (and so matches its `not`).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAX_FILTER_CHARS = 1_000_000  # a 2000-file `in` list is ~60 kB; anything far larger is a caller bug

_MISSING = object()
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class Column:
    """A string field dictionary-encoded: codes[slot] is the value's code, -1 when missing or not a string."""

    def __init__(self) -> None:
        self.codes = np.empty(0, dtype=np.int32)
        self.values: dict[str, int] = {}
        self.slots: dict[int, list[int]] = {}  # code -> its slots, ascending (appended in slot order)
        self.length = 0

    def extend(self, field: str, rows: Sequence[dict[str, Any]], capacity: int) -> None:
        end = self.length + len(rows)
        if end > len(self.codes):
            grown = np.full(max(capacity, end), -1, dtype=np.int32)
            grown[: self.length] = self.codes[: self.length]
            self.codes = grown
        for i, row in enumerate(rows, self.length):
            v = row.get(field, _MISSING)
            if isinstance(v, str):
                code = self.codes[i] = self.values.setdefault(v, len(self.values))
                self.slots.setdefault(code, []).append(i)
            else:
                self.codes[i] = -1
        self.length = end

    def codes_of(self, values: Sequence[Any]) -> np.ndarray:
        return np.array([self.values[v] for v in values if isinstance(v, str) and v in self.values], dtype=np.int32)


class Rows:
    """What a filter reads: the row dicts by slot, the number of slots, and the encoded columns."""

    def __init__(self, fields: Sequence[dict[str, Any]], ids: Sequence[str], n: int, column: Callable[[str], Column]):
        self.fields = fields
        self.ids = ids
        self.n = n
        self.column = column


class Predicate:
    """mask(rows): a boolean mask over slots [0, n); select(rows), when set: the matching slots directly
    (ascending, dead ones included), for filters that name a few values of an encoded column."""

    def __init__(self, mask: Callable[[Rows], np.ndarray], select: Callable[[Rows], np.ndarray] | None = None):
        self.mask = mask
        self.select = select

    def __call__(self, rows: Rows) -> np.ndarray:
        return self.mask(rows)


def compile_filter(expr: str) -> Predicate:
    """The expression as a function of the rows that returns a boolean mask over slots [0, n)."""
    if len(expr) > MAX_FILTER_CHARS:
        raise ValueError(f"filter is {len(expr)} characters, more than {MAX_FILTER_CHARS}")
    try:
        tree = ast.parse(expr.replace("&&", " and ").replace("||", " or "), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"invalid filter {expr[:80]!r}: {exc.msg}") from None
    return _node(tree.body)


def _node(node: ast.AST) -> Predicate:
    if isinstance(node, ast.BoolOp):
        parts = [_node(v) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def boolop(rows: Rows) -> np.ndarray:
            mask = parts[0](rows)
            for p in parts[1:]:
                mask = combine(mask, p(rows))
            return mask

        return Predicate(boolop)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _node(node.operand)
        return Predicate(lambda rows: ~inner(rows))
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        return _compare(node.left, node.ops[0], node.comparators[0])
    raise ValueError(f"unsupported filter expression: {ast.unparse(node)[:80]!r}")


def _field(node: ast.AST) -> tuple[str, str | None]:
    """`name` -> (name, None); `name["key"]` -> (name, key)."""
    if isinstance(node, ast.Name):
        return node.id, None
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    ):
        return node.value.id, node.slice.value
    raise ValueError(f'unsupported filter operand: {ast.unparse(node)[:80]!r} (a field or field["key"])')


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
    ):
        return -node.operand.value
    if isinstance(node, ast.Name) and node.id in ("true", "false", "True", "False"):
        return node.id.lower() == "true"
    raise ValueError(f"unsupported filter value: {ast.unparse(node)[:80]!r} (a literal or a list of literals)")


def _compare(left: ast.AST, op: ast.cmpop, right: ast.AST) -> Predicate:
    name, key = _field(left)
    value = _literal(right)
    membership = isinstance(op, ast.In | ast.NotIn)
    if membership != isinstance(value, list):
        raise ValueError(f"filter on {name}: `in`/`not in` take a list, other comparisons a single value")
    negate = isinstance(op, ast.NotIn | ast.NotEq)
    wanted = value if membership else [value]

    if (
        key is None
        and name != "id"
        and isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn)
        and all(isinstance(v, str) for v in wanted)
    ):

        def encoded(rows: Rows) -> np.ndarray:
            column = rows.column(name)
            codes = column.codes[: rows.n]
            hit = np.isin(codes, column.codes_of(wanted))
            # Milvus: a row without the field matches neither `==` nor `!=`.
            return (~hit & (codes >= 0)) if negate else hit

        def select(rows: Rows) -> np.ndarray:
            column = rows.column(name)
            lists = [column.slots[int(c)] for c in column.codes_of(wanted)]
            if not lists:
                return np.empty(0, np.int64)
            # np.array copies each list under the GIL, so a writer appending meanwhile is never seen half-way.
            found = np.concatenate([np.array(slots, np.int64) for slots in lists])
            found = found[found < rows.n]
            if len(lists) > 1:
                found.sort()
            return found

        return Predicate(encoded, None if negate else select)

    if membership:
        members = {_hashable(v) for v in value}

        def test(v: Any) -> bool:
            return (_hashable(v) in members) != negate
    else:
        fn = _COMPARE.get(type(op))
        if fn is None:
            raise ValueError(f"unsupported filter operator in {ast.unparse(op)!r}")

        def test(v: Any) -> bool:
            try:
                return bool(fn(v, value))
            except TypeError:  # comparing a string with a number: no match, as in Milvus
                return False

    def scan(rows: Rows) -> np.ndarray:
        out = np.zeros(rows.n, dtype=bool)
        for slot in range(rows.n):
            v = rows.ids[slot] if name == "id" else rows.fields[slot].get(name, _MISSING)
            if key is not None:
                v = v.get(key, _MISSING) if isinstance(v, dict) else _MISSING
            if v is not _MISSING and v is not None:
                out[slot] = test(v)
        return out

    return Predicate(scan)


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v
