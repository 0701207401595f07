"""HttpRule annotations -> Binding: everything about one route computed once at startup.

A Binding knows how to build its request message from a matched request (body, then path
variables, then query parameters: path values win over body values, query parameters only reach
fields bound by neither) and how to render its response (compiled JSON encoder, ``response_body``
projection, raw ``google.api.HttpBody``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from . import jsonmap, jsontext
from .errors import invalid_argument
from .pattern import PathTemplate, parse_template
from .query import FieldPath, QueryBinder

log = logging.getLogger("typecase.gateway")

HTTP_BODY = "google.api.HttpBody"
_FD = FieldDescriptor
_INTEGER_TYPES = jsonmap.INT64_TYPES | jsonmap.INT32_TYPES


def http_rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The method's google.api.http rule and its additional_bindings (empty when unannotated)."""
    # Re-parse the options so the extension is read even for descriptors from another pool.
    options = descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def rule_method_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("HttpRule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), getattr(rule, kind)


@dataclass(frozen=True)
class UploadFields:
    """Where a multipart upload goes in a client-streaming request message."""

    data: FieldDescriptor  # the single top-level bytes field: one message per chunk
    file_name: FieldDescriptor | None
    content_type: FieldDescriptor | None


def _upload_fields(desc: Descriptor) -> UploadFields | None:
    data = [f for f in desc.fields if f.type == _FD.TYPE_BYTES and not f.is_repeated and f.containing_oneof is None]
    if len(data) != 1:
        return None

    def string_field(name: str) -> FieldDescriptor | None:
        f = desc.fields_by_name.get(name)
        return f if f is not None and f.type == _FD.TYPE_STRING and not f.is_repeated else None

    return UploadFields(data[0], string_field("file_name"), string_field("content_type"))


@dataclass(eq=False)
class Binding:
    service: ServiceDescriptor
    method: MethodDescriptor
    rpc: str  # "/pkg.Service/Method"
    http_method: str
    template: PathTemplate
    body: str  # "", "*" or a top-level field name
    response_body: str
    index: int  # 0 for the main rule, n for additional_bindings[n-1]
    request_cls: type[Message]
    response_cls: type[Message]
    client_streaming: bool
    server_streaming: bool
    path_fields: tuple[tuple[str, FieldPath], ...] = ()
    query: QueryBinder | None = None
    body_field: FieldDescriptor | None = None
    body_is_httpbody: bool = False
    response_is_httpbody: bool = False
    encode: Callable[[Message], Any] = field(default=jsonmap.to_json)
    seq_field: str | None = None
    after_seq: FieldDescriptor | None = None
    upload: UploadFields | None = None
    _body_decoder: Callable[..., None] | None = None

    @property
    def operation_id(self) -> str:
        base = f"{self.service.name}_{self.method.name}"
        return base if self.index == 0 else f"{base}{self.index + 1}"

    # -- request ---------------------------------------------------------------------------------
    def build_request(
        self,
        params: dict[str, str],
        body: bytes | None,
        content_type: str,
        query: Sequence[tuple[str, str]] | None,
        max_json_depth: int = jsontext.DEFAULT_MAX_DEPTH,
    ) -> Message:
        msg = self.request_cls()
        if body and self.body:
            self.decode_body(msg, body, content_type, max_json_depth)
        for var, fp in self.path_fields:
            fp.set_text(msg, params[var])
        if query and self.query is not None:
            self.query.bind(msg, query)
        return msg

    def decode_body(
        self, msg: Message, body: bytes, content_type: str, max_json_depth: int = jsontext.DEFAULT_MAX_DEPTH
    ) -> None:
        if self.body_is_httpbody:
            target: Any = msg if self.body_field is None else getattr(msg, self.body_field.name)
            target.content_type = content_type
            target.data = body
            return
        value = jsontext.loads(body, max_json_depth)
        try:
            if self._body_decoder is None:
                jsonmap.from_json(value, msg)
            else:
                self._body_decoder(msg, value, "")
        except jsonmap.JsonError as e:
            raise invalid_argument(str(e)) from None
        except Exception as e:  # any other mapping failure is still the body's fault (schemathesis found some)
            raise invalid_argument(f"the request body does not fit {msg.DESCRIPTOR.full_name}: {e}") from None

    def merge_json(self, msg: Message, value: Any) -> None:
        """Merge a whole-message JSON value (WebSocket first frame, NDJSON line)."""
        try:
            jsonmap.from_json(value, msg)
        except jsonmap.JsonError as e:
            raise invalid_argument(str(e)) from None
        except Exception as e:
            raise invalid_argument(f"the message does not fit {msg.DESCRIPTOR.full_name}: {e}") from None

    def apply_path(self, msg: Message, params: dict[str, str]) -> None:
        for var, fp in self.path_fields:
            fp.set_text(msg, params[var])


def _body_field_decoder(body_field) -> jsonmap.FieldDecoder:
    """Decodes the body into the field named by HttpRule.body. For a message field the caller sent that message's
    fields at the top level, so error paths start there ("colour", not "knowledge_base.colour")."""
    mt = body_field.message_type
    if mt is None or body_field.is_repeated or mt.full_name in jsonmap.SPECIAL_TYPES or mt.GetOptions().map_entry:
        return jsonmap.field_decoder(body_field)
    decode, name = jsonmap.decoder(mt), body_field.name

    def set_body(msg: Message, value: Any, path: str) -> None:
        if value is None:
            return
        sub = getattr(msg, name)
        sub.SetInParent()
        decode(value, sub, path)

    return set_body


def _seq_field(desc: Descriptor) -> str | None:
    f = desc.fields_by_name.get("seq")
    return "seq" if f is not None and f.type in _INTEGER_TYPES and not f.is_repeated else None


def build_binding(service: ServiceDescriptor, method: MethodDescriptor, rule: http_pb2.HttpRule, index: int) -> Binding:
    http_method, path = rule_method_and_path(rule)
    template = parse_template(path)
    req_desc, resp_desc = method.input_type, method.output_type
    request_cls = message_factory.GetMessageClass(req_desc)
    response_cls = message_factory.GetMessageClass(resp_desc)
    where = f"{method.full_name} ({http_method} {path})"

    path_fields = []
    for var in template.variables:
        try:
            fp = FieldPath(req_desc, var.name)
        except ValueError as e:
            raise ValueError(f"{where}: path variable: {e}") from None
        if fp.leaf.message_type is not None and fp.leaf.message_type.full_name not in jsonmap.WRAPPERS:
            raise ValueError(f"{where}: path variable {var.name!r} must be a scalar field")
        path_fields.append((var.name, fp))

    body = rule.body
    body_field = None
    body_is_httpbody = False
    body_decoder = None
    if body == "*":
        body_is_httpbody = req_desc.full_name == HTTP_BODY
    elif body:
        body_field = req_desc.fields_by_name.get(body)
        if body_field is None:
            raise ValueError(f"{where}: body field {body!r} is not a top-level field of {req_desc.full_name}")
        body_is_httpbody = body_field.message_type is not None and body_field.message_type.full_name == HTTP_BODY
        body_decoder = _body_field_decoder(body_field)
    if body and http_method == "GET":
        log.warning("%s: a GET binding with a body", where)

    query = None
    if body != "*" and not method.client_streaming:
        bound = [fp.names for _, fp in path_fields]
        if body_field is not None:
            bound.append((body_field.name,))
        query = QueryBinder(req_desc, bound)

    response_is_httpbody = resp_desc.full_name == HTTP_BODY
    if rule.response_body:
        rf = resp_desc.fields_by_name.get(rule.response_body)
        if rf is None:
            raise ValueError(f"{where}: response_body {rule.response_body!r} is not a field of {resp_desc.full_name}")
        encode = jsonmap.field_encoder(rf)
        if rf.message_type is not None and rf.message_type.full_name == HTTP_BODY and not rf.is_repeated:
            response_is_httpbody = True
    else:
        encode = jsonmap.encoder(resp_desc)

    after_seq = req_desc.fields_by_name.get("after_seq")
    if after_seq is not None and (after_seq.type not in _INTEGER_TYPES or after_seq.is_repeated):
        after_seq = None

    return Binding(
        service=service,
        method=method,
        rpc=f"/{service.full_name}/{method.name}",
        http_method=http_method,
        template=template,
        body=body,
        response_body=rule.response_body,
        index=index,
        request_cls=request_cls,
        response_cls=response_cls,
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
        path_fields=tuple(path_fields),
        query=query,
        body_field=body_field,
        body_is_httpbody=body_is_httpbody,
        response_is_httpbody=response_is_httpbody,
        encode=encode,
        seq_field=_seq_field(resp_desc),
        after_seq=after_seq,
        upload=_upload_fields(req_desc) if method.client_streaming else None,
        _body_decoder=body_decoder,
    )


def build_bindings(services: Iterable[ServiceDescriptor]) -> list[Binding]:
    out: list[Binding] = []
    for service in services:
        for method in service.methods:
            for index, rule in enumerate(http_rules(method)):
                out.append(build_binding(service, method, rule, index))
    return out
