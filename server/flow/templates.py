"""Templates in node parameters: sandboxed Jinja2, variables by reference.

A template sees the run's inputs by name (`{{question}}`), every node's outputs under the node id
(`{{llm_1.text}}`, `{{kr.citations[0].file_name}}`) and `sys` (run_id, flow_id, version_id, session_id, user_id).
A parameter that is exactly one reference (`"{{kr.citations}}"`) resolves to the referenced value itself, keeping
its type (a list stays a list); anything else renders to text.

Safety: jinja2's SandboxedEnvironment (no access to Python internals) with every value a template builds kept
small: `range` capped, `*` checked before it repeats, and the result of every operator, `~` concatenation, call,
filter and in-place list change checked against the string and list limits, so a template fails with the limit
it hit, and the deadline checked on every loop iteration, call, operator and concatenation (a loop that prints
nothing used to run 4.6 s past a deadline checked only between output pieces). Rendering itself runs in worker
processes killed at the deadline and capped in memory (workers.py): this module is what runs there. Limits are
given per render (Limits, from the flow_template_* settings) and named in every error.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment


@dataclass(frozen=True)
class Limits:
    """What one render may do; the defaults are the flow_template_* settings' defaults."""

    timeout_seconds: float = 2.0
    max_chars: int = 20_000
    max_output_chars: int = 1_000_000
    max_string_chars: int = 1_000_000
    max_list_items: int = 100_000
    max_range_items: int = 10_000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            timeout_seconds=settings.flow_template_timeout_seconds,
            max_chars=settings.flow_template_max_chars,
            max_output_chars=settings.flow_template_max_output_chars,
            max_string_chars=settings.flow_template_max_string_chars,
            max_list_items=settings.flow_template_max_list_items,
            max_range_items=settings.flow_template_max_range_items,
        )


DEFAULT_LIMITS = Limits()
_LIMITS: contextvars.ContextVar[Limits] = contextvars.ContextVar("template_limits", default=DEFAULT_LIMITS)
_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("template_deadline", default=float("inf"))

# One whole-value reference: {{ a.b.c }} or {{ a.b[0].c }} with nothing around it.
_REFERENCE = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*\}\}\s*$")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_REFERENCE_CHARS = 1024  # longer text is never one reference, and is not kept in the cache


class TemplateFailed(ValueError):
    """A template did not parse or failed while rendering."""


def _safe_range(*args: int) -> range:
    values = range(*args)
    limit = _LIMITS.get().max_range_items
    if len(values) > limit:
        raise SecurityError(f"range() is limited to {limit} items (flow_template_max_range_items)")
    return values


def _size(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1


def _bounded(value: Any) -> Any:
    """The value, unless it is a string or collection past its limit."""
    limits = _LIMITS.get()
    if isinstance(value, str):
        if len(value) > limits.max_string_chars:
            raise SecurityError(
                f"a string grew past {limits.max_string_chars} characters (flow_template_max_string_chars)"
            )
    elif isinstance(value, (list, tuple, dict, set)) and len(value) > limits.max_list_items:
        raise SecurityError(f"a list grew past {limits.max_list_items} items (flow_template_max_list_items)")
    return value


def _tick() -> None:
    """Stop a render past its deadline: called on every loop iteration, call, operator and concatenation, so
    loops that print nothing and macros that recurse are stopped too (not only between output pieces)."""
    if time.monotonic() > _DEADLINE.get():
        raise SecurityError(
            f"template took longer than {_LIMITS.get().timeout_seconds:g}s (flow_template_timeout_seconds)"
        )


def _ticking(iterable: Iterable[Any]) -> Iterable[Any]:
    for item in iterable:
        _tick()
        yield item


def _sized_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja's pass_context/pass_environment marks
    def checked(*args: Any, **kwargs: Any) -> Any:
        return _bounded(function(*args, **kwargs))

    return checked


class _CodeGenerator(CodeGenerator):
    """`a ~ b` compiles to environment.concat((a, b)), which checks the joined length before joining, and every
    `{% for %}` iterates through the _ticking filter."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _TICKING, [], [], None, None, lineno=loop.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(SandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        _tick()
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64 and abs(left) > 1:
                raise SecurityError("exponent too large")
        if operator_name == "*":
            limits = _LIMITS.get()
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    limit = limits.max_string_chars if isinstance(seq, str) else limits.max_list_items
                    if _size(seq) * max(times, 0) > limit:
                        raise SecurityError(
                            "repetition too large: "
                            + (
                                f"a string is limited to {limit} characters (flow_template_max_string_chars)"
                                if isinstance(seq, str)
                                else f"a list is limited to {limit} items (flow_template_max_list_items)"
                            )
                        )
        return _bounded(super().call_binop(context, operator_name, left, right))

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's signature)
        _tick()
        result = super().call(__context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (list, dict, set)):  # l.append(x), l.extend(l): in-place growth
            _bounded(owner)
        return _bounded(result)

    def concat(self, values: Iterable[Any]) -> str:
        _tick()
        pieces = [str(value) for value in values]
        limit = _LIMITS.get().max_string_chars
        if sum(map(len, pieces)) > limit:
            raise SecurityError(f"a string grew past {limit} characters (flow_template_max_string_chars)")
        return "".join(pieces)


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


ENV = _Sandbox(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
ENV.globals["range"] = _safe_range
ENV.filters["tojson"] = _tojson
ENV.filters["json"] = _tojson
ENV.filters = {name: _sized_filter(function) for name, function in ENV.filters.items()}
_TICKING = "_ticking"
ENV.filters[_TICKING] = _ticking


def _too_long(source: str, limits: Limits) -> TemplateFailed | None:
    if len(source) > limits.max_chars:
        return TemplateFailed(f"template longer than {limits.max_chars} characters (flow_template_max_chars)")
    return None


@functools.lru_cache(maxsize=128)
def compile_template(source: str):
    try:
        return ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise TemplateFailed("template nested too deeply") from None


def reference_path(source: str) -> tuple[str, ...] | None:
    """("kr", "citations") for "{{kr.citations}}"; None when the text is not exactly one reference."""
    return _reference_path(source) if len(source) <= _MAX_REFERENCE_CHARS else None


@functools.lru_cache(maxsize=4096)
def _reference_path(source: str) -> tuple[str, ...] | None:
    match = _REFERENCE.match(source)
    if match is None:
        return None
    expr = match.group(1)
    head_match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", expr)
    if head_match is None:
        return None
    head = head_match.group(0)
    parts: list[Any] = [head]
    for attr, index in _PATH_PART.findall(expr[len(head) :]):
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


def render(source: str, scope: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
    """Render a template to text (a plain string renders to itself), here and now: workers.py calls this
    in a worker process, which is where untrusted templates run."""
    if not has_template(source):
        return source
    too_long = _too_long(source, limits)
    if too_long:
        raise too_long
    template = compile_template(source)
    token, deadline = _LIMITS.set(limits), _DEADLINE.set(time.monotonic() + limits.timeout_seconds)
    try:
        return _render(template, scope, limits)
    finally:
        _LIMITS.reset(token)
        _DEADLINE.reset(deadline)


def _render(template, scope: dict[str, Any], limits: Limits) -> str:
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(scope):
            pieces.append(piece)
            size += len(piece)
            if size > limits.max_output_chars:
                raise TemplateFailed(
                    f"template output exceeds {limits.max_output_chars} characters (flow_template_max_output_chars)"
                )
            _tick()
    except TemplateFailed:
        raise
    except SecurityError as exc:
        raise TemplateFailed(str(exc) if "took longer" in str(exc) else f"template refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateFailed(f"template failed: {exc}") from None
    except RecursionError:
        raise TemplateFailed("template failed: recursion too deep") from None
    except MemoryError:
        raise
    except Exception as exc:  # errors raised by filters and operations inside the template
        raise TemplateFailed(f"template failed: {type(exc).__name__}: {exc}") from None
    return "".join(pieces)


def render_job(request: dict[str, Any]) -> str:
    """The worker processes' entry point (infra/bounded.py): {"source", "scope", "limits"} -> text."""
    return render(request["source"], request["scope"], Limits(**request["limits"]))


def render_request(source: str, scope: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """render_job's request, carrying only the variables the template may read: those whose name appears in it
    (found by a scan, not by parsing, which costs up to ~25 µs per expression and stays off the event loop)."""
    return {
        "source": source,
        "scope": {name: scope[name] for name in _identifiers(source) if name in scope},
        "limits": asdict(limits),
    }


@functools.lru_cache(maxsize=2048)
def _identifiers(source: str) -> frozenset[str]:
    return frozenset(_IDENTIFIER.findall(source))


def resolve(value: Any, scope: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> Any:
    """Resolve templates anywhere in a JSON value, here and now: a whole-value reference keeps the referenced
    value's type, other strings render to text; lists and objects are resolved item by item.
    (workers.FlowWorkers.resolve does the same with rendering in worker processes.)"""
    if isinstance(value, str):
        if not has_template(value):
            return value
        path = reference_path(value)
        if path is not None:
            return lookup(path, scope)
        return render(value, scope, limits)
    if isinstance(value, list):
        return [resolve(item, scope, limits) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, scope, limits) for key, item in value.items()}
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


def references(source: str, limits: Limits = DEFAULT_LIMITS) -> list[Reference]:
    """Every variable a template reads from its scope, with the first key under it when statically known.
    Raises TemplateFailed on a syntax error or a template longer than the limit."""
    if not has_template(source):
        return []
    too_long = _too_long(source, limits)
    if too_long:
        raise too_long
    return list(_references(source))


@functools.lru_cache(maxsize=2048)
def _references(source: str) -> tuple[Reference, ...]:
    try:
        ast = ENV.parse(source)
        free = meta.find_undeclared_variables(ast)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise TemplateFailed("template nested too deeply") from None
    found: dict[tuple[str, str | None], None] = {}
    keyed: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))  # find_all's type is their common base
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
    return tuple(Reference(name, key) for name, key in found)


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
