"""OpenAPI 3.1 document generated from the bindings, in the manner of protoc-gen-openapiv2.

* one operation per binding (``operationId`` ``Service_Method``, additional bindings ``Service_Method2``...),
  tagged with the service name; summary/description from the method's proto comment;
* path variables become path parameters; a sub-template is expanded the way grpc-gateway's
  ``expand_slashed_path_patterns`` does (``{name=shelves/*/books/*}`` -> ``shelves/{shelf}/books/{book}``)
  so that generic clients, which percent-encode parameters, build paths that match; a nested field
  path ``{book.name}`` is named ``book_name`` (tools read ``{a.b}`` as attribute access); both keep
  the field path in ``x-field-path``;
* fields bound by neither path nor body become query parameters, nested messages flattened with
  dots (``a.b``), repeated fields as exploded arrays, enums by name; maps are not listed (they are
  accepted as ``m[key]=value``);
* request and response schemas come from the messages (proto field names; int64 kinds as strings;
  an unset message field is ``null``), with the well-known types' JSON forms; enums are string enums;
* server streams document the NDJSON line (``{"result": ..., "error": google.rpc.Status}``, what
  grpc-gateway calls x-stream-definitions) and the SSE form; uploads document multipart/form-data;
* every operation's ``default`` response is the google.rpc.Status error body.

With a ``descriptor_set`` (FileDescriptorSet with source info, e.g. ``buf build -o`` or protoc
``--include_source_info``) the leading comments of services, methods, messages, fields and enums
become descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from . import jsonmap
from .openapi_examples import message_example
from .pattern import LITERAL, STAR

if TYPE_CHECKING:
    from .app import GatewayOptions
    from .bindings import Binding

_FD = FieldDescriptor
STATUS = "google.rpc.Status"
_MAX_QUERY_DEPTH = 4


# -- comments --------------------------------------------------------------------------------------


def load_comments(descriptor_set: bytes | None) -> dict[str, str]:
    """Full name (``pkg.Msg``, ``pkg.Msg.field``, ``pkg.Svc.Method``, ...) -> leading comment."""
    out: dict[str, str] = {}
    if not descriptor_set:
        return out
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    for f in fds.file:
        by_path = {
            tuple(loc.path): (loc.leading_comments or loc.trailing_comments).strip()
            for loc in f.source_code_info.location
        }
        pkg = f"{f.package}." if f.package else ""

        def walk_message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str) -> None:
            name = prefix + msg.name
            _put(out, name, by_path.get(path))
            for i, fld in enumerate(msg.field):
                _put(out, f"{name}.{fld.name}", by_path.get((*path, 2, i)))
            for i, nested in enumerate(msg.nested_type):
                walk_message(nested, (*path, 3, i), name + ".")
            for i, enum in enumerate(msg.enum_type):
                walk_enum(enum, (*path, 4, i), name + ".")

        def walk_enum(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str) -> None:
            name = prefix + enum.name
            _put(out, name, by_path.get(path))
            for i, v in enumerate(enum.value):
                _put(out, f"{name}.{v.name}", by_path.get((*path, 2, i)))

        for i, msg in enumerate(f.message_type):
            walk_message(msg, (4, i), pkg)
        for i, enum in enumerate(f.enum_type):
            walk_enum(enum, (5, i), pkg)
        for i, svc in enumerate(f.service):
            _put(out, pkg + svc.name, by_path.get((6, i)))
            for j, m in enumerate(svc.method):
                _put(out, f"{pkg}{svc.name}.{m.name}", by_path.get((6, i, 2, j)))
    return out


def _put(out: dict[str, str], key: str, comment: str | None) -> None:
    if comment:
        out[key] = comment


# -- schemas ---------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_WKT_SCHEMAS: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
        "description": "A message of any type, with its type URL in @type.",
    },
}


class SchemaBuilder:
    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, Any] = {}

    def scalar(self, fd: FieldDescriptor) -> dict[str, Any]:
        t = fd.type
        if t in jsonmap.INT64_TYPES:
            unsigned = t in (_FD.TYPE_UINT64, _FD.TYPE_FIXED64)
            return {
                "type": "string",
                "format": "uint64" if unsigned else "int64",
                "pattern": r"^[0-9]+$" if unsigned else r"^-?[0-9]+$",
            }
        if t in jsonmap.INT32_TYPES:
            lo, hi = jsonmap.INT_RANGES[t]
            return {"type": "integer", "format": "int32" if lo < 0 else "uint32", "minimum": lo, "maximum": hi}
        if t == _FD.TYPE_DOUBLE:
            return {"type": "number", "format": "double"}
        if t == _FD.TYPE_FLOAT:
            return {"type": "number", "format": "float"}
        if t == _FD.TYPE_BOOL:
            return {"type": "boolean"}
        if t == _FD.TYPE_STRING:
            return {"type": "string"}
        if t == _FD.TYPE_BYTES:
            return {"type": "string", "format": "byte", "contentEncoding": "base64"}
        if t == _FD.TYPE_ENUM:
            return self.enum(fd.enum_type)
        raise TypeError(fd.full_name)

    def enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        if enum.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        if enum.full_name not in self.schemas:
            schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.values]}
            doc = self.comments.get(enum.full_name)
            values = [
                f"- {v.name}: {self.comments[f'{enum.full_name}.{v.name}']}"
                for v in enum.values
                if f"{enum.full_name}.{v.name}" in self.comments
            ]
            if doc or values:
                schema["description"] = "\n".join([doc or "", *values]).strip()
            self.schemas[enum.full_name] = schema
        return _ref(enum.full_name)

    def message(self, desc: Descriptor) -> dict[str, Any]:
        """Schema of a message value (a $ref for regular messages, inline for well-known types)."""
        name = desc.full_name
        if name in _WKT_SCHEMAS:
            return dict(_WKT_SCHEMAS[name])
        if name in jsonmap.WRAPPERS:
            return self.scalar(desc.fields_by_name["value"])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive types
            props = {fd.name: self.field(fd) for fd in desc.fields}
            schema: dict[str, Any] = {"type": "object", "properties": props}
            if name in self.comments:
                schema["description"] = self.comments[name]
            oneofs = [
                o
                for o in desc.oneofs
                if not (len(o.fields) == 1 and o.fields[0].has_presence and o.name.startswith("_"))
            ]
            if oneofs:
                extra = "; ".join(f"at most one of {', '.join(f.name for f in o.fields)}" for o in oneofs)
                schema["description"] = f"{schema.get('description', '')}\n\n({extra})".strip()
            self.schemas[name] = schema
        return _ref(name)

    def value(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.message_type is not None:
            return self.message(fd.message_type)
        return self.scalar(fd)

    def field(self, fd: FieldDescriptor) -> dict[str, Any]:
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value(mt.fields_by_name["value"])}
        elif fd.is_repeated:
            schema = {"type": "array", "items": self.value(fd)}
        elif mt is not None:
            inner = self.message(mt)
            if "$ref" in inner:
                schema = {"anyOf": [inner, {"type": "null"}]} if fd.containing_oneof is None else inner
            elif fd.containing_oneof is None and inner.get("type") not in (None, "null"):
                schema = {**inner, "type": [inner["type"], "null"]}
            else:
                schema = inner
        else:
            schema = self.scalar(fd)
        doc = self.comments.get(fd.full_name)
        if doc:
            schema = {**schema, "description": doc} if "$ref" not in schema else {"allOf": [schema], "description": doc}
        return schema


# -- operations -------------------------------------------------------------------------------------


def _singular(word: str) -> str:
    w = word.replace("-", "_")
    if w.endswith("ies") and len(w) > 3:
        return w[:-3] + "y"
    if w.endswith("ves") and len(w) > 3:
        return w[:-3] + "f"
    if w.endswith("s") and not w.endswith("ss") and len(w) > 1:
        return w[:-1]
    return w + "_id"


def openapi_path(binding: Binding, builder: SchemaBuilder) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path of a binding and its path parameters.

    A plain variable ``{name}`` is one parameter typed by its field. A sub-template is expanded
    (grpc-gateway's ``expand_slashed_path_patterns``): ``{name=shelves/*/books/*}`` becomes
    ``shelves/{shelf}/books/{book}``, each wildcard its own string parameter, so tools that
    percent-encode parameters still produce paths the gateway matches; ``x-field-path`` names the
    field the segments fill.
    """
    t = binding.template
    segs = t.segments
    parts: list[str] = []
    params: list[dict[str, Any]] = []
    used: set[str] = set()
    starts = {v.start: v for v in t.variables}
    fields = dict(binding.path_fields)

    def unique(name: str) -> str:
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        return name

    i = 0
    while i < len(segs):
        var = starts.get(i)
        if var is None:
            kind, lit = segs[i]
            parts.append(lit if kind == LITERAL else ("*" if kind == STAR else "**"))
            i += 1
            continue
        leaf = fields[var.name].leaf
        doc = builder.comments.get(leaf.full_name)
        sub = segs[var.start : var.end]
        if len(sub) == 1 and sub[0][0] == STAR:
            name = unique(param_name(var.name))
            parts.append("{" + name + "}")
            fd = leaf if leaf.message_type is None else leaf.message_type.fields_by_name["value"]
            p: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": builder.scalar(fd)}
            if "." in var.name:
                p["x-field-path"] = var.name
            if doc:
                p["description"] = doc
            params.append(p)
        else:
            for j, (kind, lit) in enumerate(sub):
                if kind == LITERAL:
                    parts.append(lit)
                    continue
                prev = sub[j - 1][1] if j > 0 and sub[j - 1][0] == LITERAL else param_name(var.name)
                name = unique(_singular(prev) if kind == STAR else f"{param_name(var.name)}_path")
                parts.append("{" + name + "}")
                schema: dict[str, Any] = {"type": "string"}
                if kind == STAR:
                    schema["pattern"] = "^[^/]+$"
                what = "a segment" if kind == STAR else "the remaining segments (slashes unescaped)"
                params.append(
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "schema": schema,
                        "x-field-path": var.name,
                        "description": f"{what} of `{var.name}` ({t.text})" + (f". {doc}" if doc else ""),
                    }
                )
        i = var.end
    path = "/" + "/".join(parts)
    if t.verb:
        path += ":" + t.verb
    return path, params


def param_name(field_path: str) -> str:
    """The OpenAPI name of a path variable: dots become underscores, since many tools treat
    ``{a.b}`` as attribute access (the field path is kept in ``x-field-path``)."""
    return field_path.replace(".", "_")


def _escape_regex(s: str) -> str:
    import re

    return re.escape(s)


def _query_parameters(builder: SchemaBuilder, binding: Binding) -> list[dict[str, Any]]:
    if binding.query is None:
        return []
    bound = [tuple(b) for b in binding.query.bound]
    out: list[dict[str, Any]] = []

    def walk(desc: Descriptor, prefix: tuple[str, ...], stack: tuple[str, ...]) -> None:
        for fd in desc.fields:
            path = (*prefix, fd.name)
            if any(path[: len(b)] == b for b in bound):
                continue
            if path == ("access_token",):
                continue
            mt = fd.message_type
            if mt is not None and mt.GetOptions().map_entry:
                continue
            if mt is not None and mt.full_name not in _QUERYABLE_WKT:
                if fd.is_repeated or mt.full_name in stack or len(prefix) >= _MAX_QUERY_DEPTH:
                    continue
                if mt.full_name in jsonmap.SPECIAL_TYPES:
                    continue
                walk(mt, path, (*stack, mt.full_name))
                continue
            if mt is not None:
                schema = (
                    dict(_QUERYABLE_WKT[mt.full_name])
                    if mt.full_name not in jsonmap.WRAPPERS
                    else builder.scalar(mt.fields_by_name["value"])
                )
            else:
                schema = builder.scalar(fd)
            if fd.is_repeated:
                schema = {"type": "array", "items": schema}
            param: dict[str, Any] = {"name": ".".join(path), "in": "query", "required": False, "schema": schema}
            if fd.is_repeated:
                param["style"] = "form"
                param["explode"] = True
            doc = builder.comments.get(fd.full_name)
            if doc:
                param["description"] = doc
            out.append(param)

    walk(binding.request_cls.DESCRIPTOR, (), (binding.request_cls.DESCRIPTOR.full_name,))
    return out


_QUERYABLE_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    **{w: {} for w in jsonmap.WRAPPERS},
}


def _request_body(builder: SchemaBuilder, binding: Binding) -> dict[str, Any] | None:
    req = binding.request_cls.DESCRIPTOR
    if binding.client_streaming:
        content: dict[str, Any] = {
            "application/x-ndjson": {"schema": builder.message(req)},
        }
        if binding.upload is not None:
            props: dict[str, Any] = {
                "file": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
            }
            content = {"multipart/form-data": {"schema": {"type": "object", "properties": props}}, **content}
        return {
            "required": False,
            "content": content,
            "description": "A client stream: a multipart upload (text fields first, then the file) "
            "or one JSON request message per line.",
        }
    if not binding.body:
        return None
    if binding.body_is_httpbody:
        return {"required": False, "content": {"*/*": {"schema": {}}}}
    media: dict[str, Any]
    if binding.body == "*":
        in_path = frozenset(fp.names[0] for _, fp in binding.path_fields if len(fp.names) == 1)
        media = {"schema": builder.message(req), "example": message_example(req, skip=in_path)}
    else:
        assert binding.body_field is not None
        media = {"schema": builder.field(binding.body_field)}
        mt = binding.body_field.message_type
        if mt is not None and not binding.body_field.is_repeated:
            media["example"] = message_example(mt)
    return {"required": False, "content": {"application/json": media}}


def _response_schema(builder: SchemaBuilder, binding: Binding) -> dict[str, Any]:
    resp = binding.response_cls.DESCRIPTOR
    if binding.response_body:
        return builder.field(resp.fields_by_name[binding.response_body])
    return builder.message(resp)


def _stream_result(builder: SchemaBuilder, binding: Binding, result: dict[str, Any]) -> dict[str, Any]:
    resp = binding.response_cls.DESCRIPTOR.full_name
    name = f"StreamResultOf_{resp}" + (f"_{binding.response_body}" if binding.response_body else "")
    if name not in builder.schemas:
        builder.schemas[name] = {
            "type": "object",
            "title": f"Stream result of {resp}",
            "description": "One line of an NDJSON stream: a message, or the error that ended the stream.",
            "properties": {"result": result, "error": _ref(STATUS)},
        }
    return _ref(name)


def split_summary(doc: str) -> tuple[str, str]:
    """A comment's first sentence (its lines joined: proto comments wrap mid-sentence) and the rest."""
    paragraph, _, after = doc.strip().partition("\n\n")
    text = " ".join(line.strip() for line in paragraph.splitlines())
    end = _SENTENCE_END.search(text)
    if end is None:
        return text, after.strip()
    return text[: end.start() + 1], "\n\n".join(p for p in (text[end.end() :].strip(), after.strip()) if p)


_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)[.!?](\s+(?=[A-Z(`\"])|\s*$)")


def _operation(builder: SchemaBuilder, binding: Binding, path_params: list[dict[str, Any]]) -> dict[str, Any]:
    method = binding.method
    doc = builder.comments.get(method.full_name, "")
    summary, rest = split_summary(doc)
    op: dict[str, Any] = {"operationId": binding.operation_id, "tags": [binding.service.name]}
    if summary:
        op["summary"] = summary
    if rest:
        op["description"] = rest
    params: list[dict[str, Any]] = list(path_params)
    params.extend(_query_parameters(builder, binding))
    if params:
        op["parameters"] = params
    body = _request_body(builder, binding)
    if body is not None:
        op["requestBody"] = body
    if binding.response_is_httpbody:
        ok: dict[str, Any] = {"description": "A successful response (raw body).", "content": {"*/*": {"schema": {}}}}
    elif binding.server_streaming:
        result = _response_schema(builder, binding)
        ok = {
            "description": "A successful response (streaming responses): NDJSON lines by default, "
            "Server-Sent Events with Accept: text/event-stream, or WebSocket frames on Upgrade.",
            "content": {
                "application/x-ndjson": {"schema": _stream_result(builder, binding, result)},
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "id: <seq>, data: <message JSON>; event: error carries a google.rpc.Status.",
                    }
                },
            },
        }
    else:
        ok = {
            "description": "A successful response.",
            "content": {"application/json": {"schema": _response_schema(builder, binding)}},
        }
    op["responses"] = {
        "200": ok,
        "default": {
            "description": "An unexpected error response.",
            "content": {"application/json": {"schema": _ref(STATUS)}},
        },
    }
    return op


def build_document(bindings: Iterable[Binding], options: GatewayOptions) -> dict[str, Any]:
    from google.rpc import status_pb2

    builder = SchemaBuilder(load_comments(options.descriptor_set))
    builder.message(status_pb2.Status.DESCRIPTOR)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, dict[str, Any]] = {}
    for binding in bindings:
        path, path_params = openapi_path(binding, builder)
        method = binding.http_method.lower()
        if method not in ("get", "put", "post", "delete", "patch", "options", "head", "trace"):
            continue  # custom verbs (e.g. SEARCH) have no OpenAPI operation field
        item = paths.setdefault(path, {})
        if method in item:
            continue  # another template renders to the same OpenAPI path; the first is documented
        item[method] = _operation(builder, binding, path_params)
        svc = binding.service
        if svc.name not in tags:
            tags[svc.name] = {"name": svc.name}
            if svc.full_name in builder.comments:
                tags[svc.name]["description"] = builder.comments[svc.full_name]
    for path, item in options.openapi_paths.items():  # routes served beside the transcoded ones
        paths.setdefault(path, {}).update(item)
        for op in item.values():
            for tag in op.get("tags", ()):
                tags.setdefault(tag, {"name": tag})
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": options.title, "version": options.version},
        "tags": list(tags.values()),
        "paths": paths,
        "components": {"schemas": dict(sorted(builder.schemas.items()))},
    }
    if options.security_schemes:
        document["components"]["securitySchemes"] = dict(options.security_schemes)
        # Any one scheme authenticates; an operation that needs none says so with its own `security: []`.
        document["security"] = [{name: []} for name in options.security_schemes]
    return document
