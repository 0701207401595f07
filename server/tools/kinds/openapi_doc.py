"""An OpenAPI 3.0/3.1 document turned into tool specs: one tool per operation, its path, query and header
parameters and its JSON body mapped into one JSON Schema of arguments.

Parsing (JSON or YAML, safe loader) and $ref inlining run in a worker thread under explicit caps: the document's
size (tools_max_document_bytes), the depth of inlining, and the number of schema nodes produced, so that an
alias-heavy YAML or a deeply self-referencing schema cannot expand without bound. References are looked up with
`referencing` (the JSON Schema project's resolver, which the jsonschema package uses); only local references
("#/...") are followed, never a URL, so a document cannot make Typecase fetch anything. A reference cycle is cut
with an empty schema at the point it recurs."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urljoin

import referencing
import referencing.exceptions
import referencing.jsonschema
import yaml

from typecase.server.tools.kinds.base import ToolSpec

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
LOCATIONS = ("path", "query", "header")
MAX_DEPTH = 32
MAX_NODES = 200_000
NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
DOC_URI = "urn:typecase:openapi"


class DocumentError(ValueError):
    """The text is not a usable OpenAPI 3 document; the message says why."""


def parse(text: str) -> dict[str, Any]:
    text = text.strip()
    try:
        data = json.loads(text) if text.startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise DocumentError(f"not JSON or YAML: {str(exc)[:300]}") from None
    if not isinstance(data, dict):
        raise DocumentError("not an OpenAPI document (not an object)")
    version = str(data.get("openapi") or "")
    if not version.startswith("3."):
        raise DocumentError(f"only OpenAPI 3.0 and 3.1 documents are supported (openapi: {version or 'missing'!r})")
    if not isinstance(data.get("paths"), dict):
        raise DocumentError("the document has no paths")
    return data


class Inliner:
    """Replaces local $refs by what they point at, within the caps."""

    def __init__(self, document: dict[str, Any]):
        resource = referencing.jsonschema.DRAFT202012.create_resource(document)
        self.resolver = referencing.Registry().with_resource(DOC_URI, resource).resolver(base_uri=DOC_URI)
        self.nodes = 0

    def lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise DocumentError(f"only local references are followed, not {ref[:200]!r}")
        try:
            return self.resolver.lookup(ref).contents
        except (referencing.exceptions.Unresolvable, LookupError):
            raise DocumentError(f"unresolvable reference {ref[:200]!r}") from None

    def inline(self, value: Any, seen: tuple[str, ...] = (), depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise DocumentError(f"the document's schemas expand to more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            return {}
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                if ref in seen:
                    return {}  # a cycle: cut here
                target = self.inline(self.lookup(ref), (*seen, ref), depth + 1)
                rest = {k: v for k, v in value.items() if k != "$ref"}
                if rest and isinstance(target, dict):
                    return {**target, **self.inline(rest, seen, depth + 1)}
                return target
            return {k: self.inline(v, seen, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.inline(v, seen, depth + 1) for v in value]
        return value


def tool_name(operation: dict[str, Any], method: str, path: str) -> str:
    name = str(operation.get("operationId") or f"{method}_{path}")
    return NAME_CHARS.sub("_", name).strip("_")[:64] or method


def base_url(document: dict[str, Any], document_url: str) -> str:
    servers = document.get("servers") or []
    if not servers or not isinstance(servers[0], dict):
        return document_url.rsplit("/", 1)[0] if document_url else ""
    server = servers[0]
    url = str(server.get("url") or "")
    for name, variable in (server.get("variables") or {}).items():
        url = url.replace("{" + name + "}", str((variable or {}).get("default", "")))
    return urljoin(document_url, url) if document_url else url


def operations(document: dict[str, Any], document_url: str, category: str, limit: int) -> list[ToolSpec]:
    """The document's operations as tool specs (at most `limit`). Raises DocumentError."""
    inliner = Inliner(document)
    default_base = base_url(document, document_url)
    specs: list[ToolSpec] = []
    names: set[str] = set()
    for path, item in document["paths"].items():
        if not isinstance(item, dict):
            continue
        item = inliner.inline(item)
        shared = [p for p in item.get("parameters") or [] if isinstance(p, dict)]
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            if len(specs) >= limit:
                return specs
            name = tool_name(operation, method, path)
            while name in names:
                name = f"{name}_"[:64] if len(name) < 64 else name[:60] + str(len(specs))
            names.add(name)
            specs.append(_operation(name, method, str(path), operation, shared, default_base, category))
    return specs


def _operation(
    name: str, method: str, path: str, operation: dict[str, Any], shared: list[dict[str, Any]], base: str, category: str
) -> ToolSpec:
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for param in [*shared, *[p for p in operation.get("parameters") or [] if isinstance(p, dict)]]:
        location = str(param.get("in") or "")
        if location in LOCATIONS and param.get("name"):
            params[(location, str(param["name"]))] = param
    properties: dict[str, Any] = {}
    required: list[str] = []
    bindings = []
    for (location, pname), param in params.items():
        prop = pname if pname not in properties else f"{location}_{pname}"
        schema = dict(param.get("schema") or {"type": "string"})
        if param.get("description") and "description" not in schema:
            schema["description"] = str(param["description"])
        properties[prop] = schema
        if param.get("required") or location == "path":
            required.append(prop)
        bindings.append({"name": pname, "in": location, "prop": prop})
    body = operation.get("requestBody") if isinstance(operation.get("requestBody"), dict) else None
    content_type = ""
    if body is not None:
        content = body.get("content") or {}
        content_type = next((t for t in content if "json" in t), next(iter(content), ""))
        schema = (content.get(content_type) or {}).get("schema") or {}
        prop = "body" if "body" not in properties else "request_body"
        properties[prop] = schema
        if body.get("required"):
            required.append(prop)
        bindings.append({"name": "", "in": "body", "prop": prop})
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    description = str(operation.get("summary") or operation.get("description") or f"{method.upper()} {path}")
    return ToolSpec(
        name,
        description[:2000],
        parameters,
        category,
        {"method": method.upper(), "path": path, "params": bindings, "content_type": content_type, "base_url": base},
    )
