"""No NUL characters in request text: INVALID_ARGUMENT naming the field, for every RPC over every surface.

PostgreSQL cannot store U+0000 in text or JSON (a chat message or session title with one was a 500 there, while
SQLite stored it), and no field of this API has a use for it. Checking every string of every request, once, in
an interceptor costs less than a check per field per domain and cannot be forgotten by the next RPC: it covers
gRPC and, through the same interceptors, REST, SSE, WebSocket and each message of a client stream. Bytes fields
(uploads, inline files) are not text and are not looked at.

The walk visits only the fields a message has set (`ListFields`, in C), Struct values through their own
accessors (3x faster than ListFields on each Value), and searches each string with `in` (memchr); its cost
follows the number of set sub-messages more than the text size. Measured by bench/rpc/nul_text.py on the 2-core
VM: a 500-node flow graph (11,000 sub-messages, 200 KB) 7-19 ms, about 0.4x what the gateway's JSON decoding of
the same request costs, but 7-14x protobuf's C parse of it over gRPC; 100 message pairs of 200,000 characters
(40 MB) 7-13 ms, 0.17x the parse; a 4 MiB upload chunk 0.1-0.4 ms. The gateway could skip requests whose JSON has
no `\u0000` (a C-speed scan), but gRPC requests cannot be pre-filtered the same way (doubles and empty values put
zero bytes on the wire), and one check in one place was preferred to two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from typecase.server.rpc.errors import invalid_argument

_SKIP, _TEXT, _TEXTS, _MESSAGE, _MESSAGES, _MAP = range(6)
_KINDS: dict[FieldDescriptor, int] = {}  # per field, worked out once: GetOptions() is slow on the hot path


def _kind(fd: FieldDescriptor) -> int:
    kind = _KINDS.get(fd)
    if kind is None:
        if fd.type == FieldDescriptor.TYPE_STRING:
            kind = _TEXTS if fd.is_repeated else _TEXT
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            assert fd.message_type is not None
            kind = _MAP if fd.message_type.GetOptions().map_entry else _MESSAGES if fd.is_repeated else _MESSAGE
        else:  # numbers, enums, bytes
            kind = _SKIP
        _KINDS[fd] = kind
    return kind


def _find(message: Message) -> list[str] | None:
    """The path to the first NUL, innermost part first (built only on a hit), or None."""
    json_kind = _JSON_TYPES.get(message.DESCRIPTOR.full_name)
    if json_kind is not None:
        return json_kind(message)
    for fd, value in message.ListFields():
        kind = _KINDS.get(fd) or _kind(fd)
        if kind == _TEXT:
            if "\0" in value:
                return [fd.name]
        elif kind == _MESSAGE:
            if (path := _find(value)) is not None:
                path.append(fd.name)
                return path
        elif kind == _TEXTS:
            for i, text in enumerate(value):
                if "\0" in text:
                    return [f"{fd.name}[{i}]"]
        elif kind == _MESSAGES:
            for i, item in enumerate(value):
                if (path := _find(item)) is not None:
                    path.append(f"{fd.name}[{i}]")
                    return path
        elif kind == _MAP:
            if (path := _find_in_map(fd, value)) is not None:
                return path
    return None


def _find_in_map(fd: FieldDescriptor, entries: Any) -> list[str] | None:
    assert fd.message_type is not None
    value_kind = _kind(fd.message_type.fields_by_name["value"])
    for key, value in entries.items():
        if isinstance(key, str) and "\0" in key:
            return [f"{fd.name}[{key!r}]"]
        if value_kind == _TEXT and "\0" in value:
            return [f"{fd.name}[{key}]"]
        if value_kind == _MESSAGE and (path := _find(value)) is not None:
            path.append(f"{fd.name}[{key}]")
            return path
    return None


# Struct, Value and ListValue are walked as the JSON they stand for, so a path reads `params.vars.x[2]`.
def _find_in_struct(struct: struct_pb2.Struct) -> list[str] | None:
    for key, value in struct.fields.items():
        if "\0" in key:
            return [repr(key)]
        if (path := _find_in_value(value)) is not None:
            path.append(key)
            return path
    return None


def _find_in_value(value: struct_pb2.Value) -> list[str] | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return [] if "\0" in value.string_value else None
    if kind == "struct_value":
        return _find_in_struct(value.struct_value)
    if kind == "list_value":
        return _find_in_list(value.list_value)
    return None


def _find_in_list(values: struct_pb2.ListValue) -> list[str] | None:
    for i, value in enumerate(values.values):
        if (path := _find_in_value(value)) is not None:
            path.append(f"[{i}]")
            return path
    return None


_JSON_TYPES: dict[str, Callable[[Any], list[str] | None]] = {
    "google.protobuf.Struct": _find_in_struct,
    "google.protobuf.Value": _find_in_value,
    "google.protobuf.ListValue": _find_in_list,
}


def nul_field(message: Message) -> str | None:
    """The path of the first string field (or map key) holding a NUL character, e.g. `pairs[2].question` or
    `flow.graph.nodes[1].params.vars[3]` inside a Struct."""
    path = _find(message)
    if path is None:
        return None
    return "".join(part if part.startswith("[") else "." + part for part in reversed(path)).lstrip(".")


def check(message: Message) -> None:
    field = nul_field(message)
    if field is not None:
        raise invalid_argument(field, "must not contain NUL (\\u0000) characters")


async def _checked(requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
    async for message in requests:
        check(message)
        yield message


def checked_request(request_or_iterator: Any, request_streaming: bool) -> Any:
    """The check as WrappingChain's `check_request` (app.py), inside the interceptors, after authentication: a
    request is checked now, a request stream's messages as they are read. (It was an interceptor of its own after
    the chain: one more handler wrapped per call and one more generator layer per streamed message.)"""
    if request_streaming:
        return _checked(request_or_iterator)
    check(request_or_iterator)
    return request_or_iterator
