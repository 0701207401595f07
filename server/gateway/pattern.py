"""Path templates of google.api.HttpRule and the router that picks a binding for a request path.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Matching follows grpc-gateway's runtime (runtime/mux.go, runtime/pattern.go):

* the request path is split on "/" *before* unescaping, literals compare against the raw segment;
* a ``:verb`` suffix is only split off the last segment when a template with that verb exists, so
  ``/v1/books/a:b`` still matches ``/v1/books/{name}`` with ``name == "a:b"``; a last segment that is
  only ``:verb`` is a 404;
* ``**`` matches zero or more segments and may be followed by fixed segments (its "tail");
* variable values are unescaped "AllExceptReserved": a single-segment value (``*``) is fully decoded,
  a multi-segment value (``**``) keeps RFC 6570 reserved characters (``%2F`` stays ``%2F``);
  a malformed escape in a matched variable is a 400.

Where grpc-gateway tries templates in reverse registration order, the router walks a segment trie
(O(segments), with backtracking only between alternatives): literal beats ``*`` beats ``**``, a
template with a verb beats one without. Registering the same method + shape twice keeps the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

LITERAL, STAR, DOUBLE_STAR = 0, 1, 2

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(ValueError):
    """An HttpRule path template that does not follow the grammar."""


class MalformedEscape(ValueError):
    """A matched path variable holds a malformed %-escape (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A ``{field.path=...}`` capture: the template segments [start, end) it spans."""

    field_path: tuple[str, ...]
    start: int
    end: int

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class PathTemplate:
    text: str
    segments: tuple[tuple[int, str], ...]  # (kind, literal text or "")
    variables: tuple[Variable, ...]
    verb: str
    double_star_at: int  # index of the "**" segment, -1 if none

    @property
    def tail_len(self) -> int:
        """Number of fixed segments after "**" (they are matched from the end of the path)."""
        return 0 if self.double_star_at < 0 else len(self.segments) - self.double_star_at - 1

    def shape(self) -> tuple[Any, ...]:
        return (tuple((k, v) for k, v in self.segments), self.verb)

    def extract(self, comps: list[str]) -> dict[str, str]:
        """Variable values for path components already known to match this template."""
        n = len(self.segments)
        ds = self.double_star_at
        out: dict[str, str] = {}
        for var in self.variables:
            parts: list[str] = []
            for i in range(var.start, var.end):
                kind, lit = self.segments[i]
                if ds >= 0 and i > ds:
                    c = comps[len(comps) - (n - i)]
                elif i == ds:
                    parts.append(unescape_reserved("/".join(comps[i : len(comps) - (n - i - 1)])))
                    continue
                else:
                    c = comps[i]
                parts.append(c if kind == LITERAL else unescape_all(c))
            out[var.name] = "/".join(parts)
        return out

    def match(self, path: str) -> dict[str, str] | None:
        """Linear reference matcher (tests and diagnostics); the router does the fast path."""
        comps = path[1:].split("/") if path.startswith("/") else None
        if comps is None:
            return None
        if self.verb:
            last = comps[-1]
            suffix = ":" + self.verb
            if not last.endswith(suffix) or len(last) == len(suffix):
                return None
            comps[-1] = last[: -len(suffix)]
        n = len(self.segments)
        ds = self.double_star_at
        if ds < 0 and len(comps) != n:
            return None
        if ds >= 0 and len(comps) < n - 1:
            return None
        for i, (kind, lit) in enumerate(self.segments):
            if i == ds:
                continue
            c = comps[i] if ds < 0 or i < ds else comps[len(comps) - (n - i)]
            if kind == LITERAL and c != lit:
                return None
        return self.extract(comps)

    def __str__(self) -> str:
        return self.text


def parse_template(text: str) -> PathTemplate:
    """Parse an HttpRule path template; raises TemplateError."""
    if not text.startswith("/"):
        raise TemplateError(f"path template {text!r} must start with '/'")
    parser = _Parser(text)
    parser.pos = 1
    segments: list[tuple[int, str]] = []
    variables: list[Variable] = []
    parser.segments(segments, variables, in_var=False)
    verb = ""
    if parser.pos < len(text) and text[parser.pos] == ":":
        parser.pos += 1
        verb = parser.literal(allow_colon=True)
    if parser.pos != len(text):
        raise TemplateError(f"unexpected {text[parser.pos]!r} at {parser.pos} in path template {text!r}")
    stars = [i for i, (k, _) in enumerate(segments) if k == DOUBLE_STAR]
    if len(stars) > 1:
        raise TemplateError(f"path template {text!r} has more than one '**'")
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"path template {text!r} binds a field twice")
    return PathTemplate(text, tuple(segments), tuple(variables), verb, stars[0] if stars else -1)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> TemplateError:
        return TemplateError(f"{what} at {self.pos} in path template {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def literal(self, allow_colon: bool = False) -> str:
        start = self.pos
        stop = "/{}*=" if allow_colon else "/{}*=:"
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a literal")
        return self.text[start : self.pos]

    def segments(self, out: list[tuple[int, str]], variables: list[Variable], in_var: bool) -> None:
        while True:
            c = self.peek()
            if self.text.startswith("**", self.pos):
                self.pos += 2
                out.append((DOUBLE_STAR, ""))
            elif c == "*":
                self.pos += 1
                out.append((STAR, ""))
            elif c == "{":
                if in_var:
                    raise self.error("nested variable")
                self.pos += 1
                m = _IDENT.match(self.text, self.pos)
                if not m:
                    raise self.error("expected a field name")
                path = [m.group()]
                self.pos = m.end()
                while self.peek() == ".":
                    m = _IDENT.match(self.text, self.pos + 1)
                    if not m:
                        raise self.error("expected a field name")
                    path.append(m.group())
                    self.pos = m.end()
                start = len(out)
                if self.peek() == "=":
                    self.pos += 1
                    self.segments(out, variables, in_var=True)
                else:
                    out.append((STAR, ""))
                if self.peek() != "}":
                    raise self.error("expected '}'")
                self.pos += 1
                variables.append(Variable(tuple(path), start, len(out)))
            else:
                out.append((LITERAL, self.literal()))
            if self.peek() == "/":
                self.pos += 1
                continue
            return


# -- unescaping (grpc-gateway UnescapingModeAllExceptReserved) ---------------------------------------

_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_RESERVED = frozenset(b"!#$&'()*+,/:;=?@[]")


def _check(s: str) -> None:
    m = _BAD_PCT.search(s)
    if m:
        raise MalformedEscape(f"malformed path escape {s[m.start() : m.start() + 3]!r}")


def _decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEscape("path escape is not valid UTF-8") from None


def unescape_all(s: str) -> str:
    """Fully decode one path segment."""
    if "%" not in s:
        return s
    _check(s)
    return _decode(_PCT.sub(lambda m: bytes([int(m.group(1), 16)]), s.encode("utf-8")))


def unescape_reserved(s: str) -> str:
    """Decode a multi-segment value but keep escapes of RFC 6570 reserved characters (e.g. %2F)."""
    if "%" not in s:
        return s

    def repl(m: re.Match[bytes]) -> bytes:
        v = int(m.group(1), 16)
        return m.group(0) if v in _RESERVED else bytes([v])

    _check(s)
    return _decode(_PCT.sub(repl, s.encode("utf-8")))


# -- router -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Node(Generic[T]):
    literals: dict[str, _Node[T]] = field(default_factory=dict)
    star: _Node[T] | None = None
    # "**" followed by a tail of the given length: the tail is matched from the end of the path.
    double: dict[int, _Node[T]] = field(default_factory=dict)
    ends: dict[str, tuple[PathTemplate, T]] = field(default_factory=dict)  # verb -> route


class NoMatch(Exception):
    """No template matches the path for any method (404)."""


class MethodNotAllowed(Exception):
    """The path matches templates, but not for the request method (405)."""

    def __init__(self, allowed: list[str]) -> None:
        super().__init__("method not allowed")
        self.allowed = allowed


class Router(Generic[T]):
    """Maps (HTTP method, raw path) to a value registered with a template."""

    def __init__(self, max_cached_matches: int = 1024) -> None:
        """The last `max_cached_matches` routed paths are remembered (emptied when full): a matched path routes
        the same until the next `add`, and the walk with its `:verb` suffix search costs ~15 us per request."""
        self._roots: dict[str, _Node[T]] = {}
        self._verbs: dict[str, list[str]] = {}
        self.duplicates: list[tuple[str, str]] = []
        self._max_cached = max_cached_matches
        self._matched: dict[tuple[str, str], tuple[T, dict[str, str]]] = {}

    def add(self, method: str, template: PathTemplate, value: T) -> bool:
        """Register; returns False (and keeps the first) when the method + shape already exists."""
        self._matched.clear()
        node = self._roots.setdefault(method, _Node())
        n = len(template.segments)
        i = 0
        while i < n:
            kind, lit = template.segments[i]
            if kind == LITERAL:
                node = node.literals.setdefault(lit, _Node())
            elif kind == STAR:
                if node.star is None:
                    node.star = _Node()
                node = node.star
            else:
                node = node.double.setdefault(n - i - 1, _Node())
            i += 1
        if template.verb in node.ends:
            self.duplicates.append((method, template.text))
            return False
        node.ends[template.verb] = (template, value)
        if template.verb:
            verbs = self._verbs.setdefault(method, [])
            if template.verb not in verbs:
                verbs.append(template.verb)
                verbs.sort(key=len, reverse=True)
        return True

    def methods(self) -> list[str]:
        return list(self._roots)

    def lookup(self, method: str, comps: list[str]) -> tuple[PathTemplate, T, list[str]] | None:
        """Find the route for already split raw components; returns (template, value, comps)."""
        root = self._roots.get(method)
        if root is None:
            return None
        last = comps[-1]
        if ":" in last:
            for verb in self._verbs.get(method, ()):
                if last.endswith(verb) and len(last) > len(verb) and last[-len(verb) - 1] == ":":
                    cut = last[: -len(verb) - 1]
                    if not cut:
                        raise NoMatch()  # grpc-gateway: a last segment that is only ":verb" is a 404
                    vcomps = comps[:-1]
                    vcomps.append(cut)
                    hit = _walk(root, vcomps, 0, verb)
                    if hit is not None:
                        return hit[0], hit[1], vcomps
        hit = _walk(root, comps, 0, "")
        if hit is None:
            return None
        return hit[0], hit[1], comps

    def match(self, method: str, raw_path: str) -> tuple[T, dict[str, str]]:
        """Route a raw (still %-escaped) path. Raises NoMatch, MethodNotAllowed or MalformedEscape."""
        cached = self._matched.get((method, raw_path))
        if cached is not None:
            return cached[0], dict(cached[1])  # a copy: the caller owns its params
        if not raw_path.startswith("/"):
            raise NoMatch()
        comps = raw_path[1:].split("/")
        hit = self.lookup(method, comps)
        if hit is not None:
            template, value, used = hit
            params = template.extract(used) if template.variables else {}
            if self._max_cached:
                if len(self._matched) >= self._max_cached:
                    self._matched.clear()
                self._matched[(method, raw_path)] = (value, dict(params))
            return value, params
        allowed = [m for m in self._roots if m != method and self.lookup(m, list(comps)) is not None]
        if allowed:
            raise MethodNotAllowed(sorted(allowed))
        raise NoMatch()


def _walk(node: _Node[T], comps: list[str], i: int, verb: str) -> tuple[PathTemplate, T] | None:
    n = len(comps)
    if i == n:
        hit = node.ends.get(verb)
        if hit is not None:
            return hit
    else:
        child = node.literals.get(comps[i])
        if child is not None:
            hit = _walk(child, comps, i + 1, verb)
            if hit is not None:
                return hit
        if node.star is not None:
            hit = _walk(node.star, comps, i + 1, verb)
            if hit is not None:
                return hit
    if node.double:
        for tail, child in node.double.items():
            if n - i >= tail:
                hit = _walk(child, comps, n - tail, verb)
                if hit is not None:
                    return hit
    return None
