"""Templates in node parameters: sandboxed Jinja2, variables by reference.

A template sees the run's inputs by name (`{{question}}`), every node's outputs under the node id
(`{{llm_1.text}}`, `{{kr.citations[0].file_name}}`) and `sys` (run_id, flow_id, version_id, session_id, user_id).
A parameter that is exactly one reference (`"{{kr.citations}}"`) resolves to the referenced value itself, keeping
its type (a list stays a list); anything else renders to text.

Safety: jinja2's SandboxedEnvironment (no access to Python internals), `range` capped, `*` and `**` checked
before they build huge values, and rendering that produces more than the output limit or runs longer than the
time limit is stopped (checked between output pieces).
"""

from __future__ import annotations

import functools
import json
import operator
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment

MAX_RANGE = 10_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_RENDER_SECONDS = 2.0
MAX_VALUE_ITEMS = 1_000_000

# One whole-value reference: {{ a.b.c }} or {{ a.b[0].c }} with nothing around it.
_REFERENCE = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*\}\}\s*$")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class TemplateFailed(ValueError):
    """A template did not parse or failed while rendering."""


def _safe_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items")
    return values


def _size(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64 and abs(left) > 1:
                raise SecurityError("exponent too large")
            return left**right
        if operator_name == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    if _size(seq) * max(times, 0) > MAX_VALUE_ITEMS:
                        raise SecurityError("repetition too large")
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


ENV = _Sandbox(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
ENV.globals["range"] = _safe_range
ENV.filters["tojson"] = _tojson
ENV.filters["json"] = _tojson


@functools.lru_cache(maxsize=2048)
def compile_template(source: str):
    try:
        return ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"template syntax error on line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=4096)
def reference_path(source: str) -> tuple[str, ...] | None:
    """("kr", "citations") for "{{kr.citations}}"; None when the text is not exactly one reference."""
    match = _REFERENCE.match(source)
    if match is None:
        return None
    expr = match.group(1)
    head = re.match(r"[A-Za-z_][A-Za-z0-9_]*", expr).group(0)
    parts: list[Any] = [head]
    for attr, index in _PATH_PART.findall(expr[len(head):]):
        parts.append(attr if attr else int(index))
    return tuple(parts)


def has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


_MISSING = object()


def lookup(path: tuple, scope: dict[str, Any]) -> Any:
    value: Any = scope.get(path[0], _MISSING)
    for part in path[1:]:
        if value is _MISSING or value is None:
            return None
        if isinstance(part, int):
            value = value[part] if isinstance(value, list) and -len(value) <= part < len(value) else _MISSING
        elif isinstance(value, dict):
            value = value.get(part, _MISSING)
        else:
            value = _MISSING
    return None if value is _MISSING else value


def render(source: str, scope: dict[str, Any], *, max_chars: int = MAX_OUTPUT_CHARS,
           max_seconds: float = MAX_RENDER_SECONDS) -> str:
    """Render a template to text (a plain string renders to itself)."""
    if not has_template(source):
        return source
    template = compile_template(source)
    deadline = time.monotonic() + max_seconds
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(scope):
            pieces.append(piece)
            size += len(piece)
            if size > max_chars:
                raise TemplateFailed(f"template output exceeds {max_chars} characters")
            if time.monotonic() > deadline:
                raise TemplateFailed(f"template took longer than {max_seconds:g}s")
    except TemplateFailed:
        raise
    except SecurityError as exc:
        raise TemplateFailed(f"template refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateFailed(f"template failed: {exc}") from None
    except Exception as exc:  # errors raised by filters and operations inside the template
        raise TemplateFailed(f"template failed: {type(exc).__name__}: {exc}") from None
    return "".join(pieces)


def resolve(value: Any, scope: dict[str, Any]) -> Any:
    """Resolve templates anywhere in a JSON value: a whole-value reference keeps the referenced value's type,
    other strings render to text; lists and objects are resolved item by item."""
    if isinstance(value, str):
        if not has_template(value):
            return value
        path = reference_path(value)
        if path is not None:
            return lookup(path, scope)
        return render(value, scope)
    if isinstance(value, list):
        return [resolve(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, scope) for key, item in value.items()}
    return value


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return _tojson(value)
    return str(value)


# -- static analysis (validation) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    name: str  # top-level variable: a node id or a run input
    key: str | None  # first attribute / constant subscript under it, if any


def references(source: str) -> list[Reference]:
    """Every variable a template reads from its scope, with the first key under it when statically known.
    Raises TemplateFailed on a syntax error."""
    if not has_template(source):
        return []
    try:
        ast = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    free = meta.find_undeclared_variables(ast)
    found: dict[tuple[str, str | None], None] = {}
    keyed: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.ctx == "load" and target.name in free:
            if isinstance(node, nodes.Getattr):
                key = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                key = node.arg.value
            else:
                key = None
            found[(target.name, key)] = None
            keyed.add(target.name)
    for node in ast.find_all(nodes.Name):
        if node.ctx == "load" and node.name in free and node.name not in keyed:
            found[(node.name, None)] = None
    return [Reference(name, key) for name, key in found]


def strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """(dotted path, text) of every string inside a JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{path}.{i}" if path else str(i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}" if path else str(key))
