"""Example request bodies for the OpenAPI document, built from the message descriptors.

A schema says which fields exist; an example shows the shape a newcomer types: the /docs page pre-fills its body
box with it. An example made by walking the schema shows every repeated field as ``[]``, which hides exactly what
matters (a chat request's messages and their roles), so here a repeated field holds one element, a map one entry,
an enum its first real value, a oneof its first member. Fields marked REQUIRED (google.api.field_behavior) are the
request's example when it has any (with the plain scalar fields of nested messages: a message's role and its
content); otherwise every field a caller may set, down to plain fields at the third level. OUTPUT_ONLY fields
and the fields a path variable fills are left out.
"""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from . import jsonmap

_FD = FieldDescriptor
MAX_DEPTH = 3
_WKT_EXAMPLES: dict[str, Any] = {
    "google.protobuf.Timestamp": "2025-01-01T00:00:00Z",
    "google.protobuf.Duration": "1.5s",
    "google.protobuf.FieldMask": "",
    "google.protobuf.Struct": {},
    "google.protobuf.Value": None,
    "google.protobuf.ListValue": [],
    "google.protobuf.Empty": {},
    "google.protobuf.Any": {"@type": "type.googleapis.com/..."},
}


def _behaviors(fd: FieldDescriptor) -> set[int]:
    return set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _scalar(fd: FieldDescriptor) -> Any:
    t = fd.type
    if t == _FD.TYPE_ENUM and fd.enum_type is not None:
        values = fd.enum_type.values
        return next((v.name for v in values if v.number != 0), values[0].name)
    if t == _FD.TYPE_BOOL:
        return False
    if t in jsonmap.INT64_TYPES:
        return "0"
    if t in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT) or t in jsonmap.INT32_TYPES:
        return 0
    return "string" if t == _FD.TYPE_STRING else ""


def _value(fd: FieldDescriptor, depth: int) -> Any:
    mt = fd.message_type
    if mt is None:
        return _scalar(fd)
    if mt.full_name in jsonmap.WRAPPERS:
        return _scalar(mt.fields_by_name["value"])
    return message_example(mt, depth + 1)


def message_example(desc: Descriptor, depth: int = 0, skip: frozenset[str] = frozenset()) -> Any:
    """An example JSON value of a message (proto field names)."""
    if desc.full_name in _WKT_EXAMPLES:
        return _WKT_EXAMPLES[desc.full_name]
    if depth >= MAX_DEPTH:
        return {}
    fields = [fd for fd in desc.fields if fd.name not in skip and field_behavior_pb2.OUTPUT_ONLY not in _behaviors(fd)]
    required = [fd for fd in fields if field_behavior_pb2.REQUIRED in _behaviors(fd)]
    plain = [fd for fd in fields if fd.message_type is None and not fd.is_repeated]
    if depth >= MAX_DEPTH - 1:
        fields = plain
    elif required:  # the request's own required fields; inside them, their plain fields too
        fields = required if depth == 0 else [fd for fd in fields if fd in required or fd in plain]
    out: dict[str, Any] = {}
    seen_oneofs: set[str] = set()
    for fd in fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            out[fd.name] = {"key": _value(mt.fields_by_name["value"], depth)}
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, depth)]
        else:
            out[fd.name] = _value(fd, depth)
    return out
