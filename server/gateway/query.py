"""Setting request fields from text: path variables, query parameters and multipart form fields.

Semantics of grpc-gateway's runtime/query.go:

* a key is a dotted field path (``a.b.c``), each name a proto name or a JSON name; a key that names
  no field is ignored; a key under a field bound by the path or the body is ignored;
* ``m[k]=v`` sets map entry ``k`` of map field ``m`` (``a.m[k]=v`` for nested maps);
* repeated fields take every value (``p=1&p=2``); two values for a non-repeated field are an error;
* setting a member of a oneof that already has a member set is an error;
* bools as Go's strconv.ParseBool, integers in base 10, floats (``NaN``/``Infinity`` too), enums by
  name or number, bytes as standard or URL-safe base64 (padding optional; a space is read as the
  "+" a query string turned into one), Timestamp as RFC 3339, Duration as Go's ``1h2m3.5s`` form or
  proto JSON's ``3.5s``, wrappers as their value, FieldMask as comma-separated paths (kept as given),
  Struct / Value as JSON text. Other message types cannot be set from text.

``access_token`` is reserved for authentication (see metadata.py) and never binds to a field.
Every error is an INVALID_ARGUMENT whose message names the parameter and the expected form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, json_format, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from .errors import RpcFailure, invalid_argument
from .jsonmap import INT_RANGES, TYPE_NAMES, WRAPPERS, decode_base64

_FD = FieldDescriptor
RESERVED_PARAMS = frozenset({"access_token"})
_MAP_KEY = re.compile(r"^(.*)\[(.*)\]$")
_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_BOOLS = {
    "1": True,
    "t": True,
    "T": True,
    "TRUE": True,
    "true": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "FALSE": False,
    "false": False,
    "False": False,
}
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_MAX_DURATION_SECONDS = 315_576_000_000


class TextError(ValueError):
    """A text value that does not parse; the caller adds which parameter it was."""


def _parse_go_duration(text: str) -> duration_pb2.Duration:
    s = text
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return duration_pb2.Duration()
    if not s:
        raise TextError("expected a duration such as 1.5s or 1h2m")
    total = 0
    pos = 0
    while pos < len(s):
        m = _GO_DURATION.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise TextError("expected a duration such as 1.5s or 1h2m")
        whole, _, frac = m.group(1).partition(".")
        unit = _UNIT_NANOS[m.group(2)]
        total += int(whole or "0") * unit
        if frac:
            total += int(frac) * unit // 10 ** len(frac)
        pos = m.end()
    total *= sign
    seconds, nanos = divmod(abs(total), 10**9)
    if seconds > _MAX_DURATION_SECONDS:
        raise TextError("duration out of range")
    if total < 0:
        seconds, nanos = -seconds, -nanos
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def _parse_int(text: str, t: int) -> int:
    if not _INT.match(text):
        raise TextError(f"expected an integer ({TYPE_NAMES[t]})")
    v = int(text)
    lo, hi = INT_RANGES[t]
    if v < lo or v > hi:
        raise TextError(f"out of range for {TYPE_NAMES[t]}")
    return v


def _parse_float(text: str, t: int) -> float:
    special = {
        "NaN": float("nan"),
        "Infinity": float("inf"),
        "-Infinity": float("-inf"),
        "+Inf": float("inf"),
        "Inf": float("inf"),
        "-Inf": float("-inf"),
    }
    if text in special:
        return special[text]
    if not _FLOAT.match(text):
        raise TextError(f"expected a number ({TYPE_NAMES[t]})")
    v = float(text)
    if t == _FD.TYPE_FLOAT and v - v == 0 and abs(v) > 3.4028234663852886e38:
        raise TextError("out of range for float")
    return v


def _parse_scalar(fd: FieldDescriptor, text: str) -> Any:
    t = fd.type
    if t == _FD.TYPE_STRING:
        return text
    if t in INT_RANGES:
        return _parse_int(text, t)
    if t in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return _parse_float(text, t)
    if t == _FD.TYPE_BOOL:
        if text not in _BOOLS:
            raise TextError("expected true or false")
        return _BOOLS[text]
    if t == _FD.TYPE_BYTES:
        try:
            return decode_base64(text)
        except ValueError:
            raise TextError("expected standard or URL-safe base64") from None
    if t == _FD.TYPE_ENUM:
        enum = fd.enum_type
        assert enum is not None
        ev = enum.values_by_name.get(text)
        if ev is not None:
            return ev.number
        if _INT.match(text):
            n = int(text)
            if n in enum.values_by_number:
                return n
        names = ", ".join(v.name for v in enum.values)
        raise TextError(f"expected one of {names} (or its number)")
    raise TextError(f"cannot be set from text ({fd.message_type.full_name if fd.message_type else fd.type})")


def _parse_message(desc: Descriptor, text: str, cls: type[Message]) -> Message:
    name = desc.full_name
    if name == "google.protobuf.Timestamp":
        ts = timestamp_pb2.Timestamp()
        try:
            ts.FromJsonString(text)
        except ValueError:
            raise TextError("expected an RFC 3339 timestamp such as 2024-01-02T03:04:05Z") from None
        return cls.FromString(ts.SerializeToString()) if cls is not timestamp_pb2.Timestamp else ts
    if name == "google.protobuf.Duration":
        d = _parse_go_duration(text)
        return cls.FromString(d.SerializeToString()) if cls is not duration_pb2.Duration else d
    if name == "google.protobuf.FieldMask":
        fm = field_mask_pb2.FieldMask(paths=[p for p in text.split(",")] if text else [])
        return cls.FromString(fm.SerializeToString()) if cls is not field_mask_pb2.FieldMask else fm
    if name in WRAPPERS:
        msg: Any = cls()
        msg.value = _parse_scalar(desc.fields_by_name["value"], text)
        return msg
    if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        msg = cls()
        try:
            json_format.ParseDict(json.loads(text), msg)  # json_format refuses more than 100 levels
        except (ValueError, RecursionError, json_format.ParseError):
            raise TextError(f"expected JSON for {name}, at most 100 levels deep") from None
        return msg
    raise TextError(f"message type {name} cannot be set from a query parameter")


def _element_class(msg: Message, fd: FieldDescriptor) -> type[Message]:
    assert fd.message_type is not None
    return message_factory.GetMessageClass(fd.message_type)


def _set_values(msg: Message, fd: FieldDescriptor, values: list[str], label: str) -> None:
    name = fd.name
    try:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if len(values) != 2:
                raise TextError("a map entry is set as name[key]=value, with one value per key")
            kf = fd.message_type.fields_by_name["key"]
            vf = fd.message_type.fields_by_name["value"]
            key = _parse_scalar(kf, values[0])
            target = getattr(msg, name)
            if vf.message_type is not None:
                target[key].CopyFrom(_parse_message(vf.message_type, values[1], _element_class(msg, vf)))
            else:
                target[key] = _parse_scalar(vf, values[1])
            return
        if fd.is_repeated:
            target = getattr(msg, name)
            if fd.message_type is not None:
                cls = _element_class(msg, fd)
                for v in values:
                    target.add().CopyFrom(_parse_message(fd.message_type, v, cls))
            else:
                target.extend([_parse_scalar(fd, v) for v in values])
            return
        if len(values) > 1:
            raise TextError(f"only one value is allowed, got {len(values)}")
        if fd.message_type is not None:
            getattr(msg, name).CopyFrom(_parse_message(fd.message_type, values[0], _element_class(msg, fd)))
        else:
            setattr(msg, name, _parse_scalar(fd, values[0]))
    except TextError as e:
        shown = ", ".join(f'"{v}"' for v in values[:3])
        raise invalid_argument(f"invalid {label}: {shown}: {e}") from None


def _lookup(desc: Descriptor, name: str) -> FieldDescriptor | None:
    fd = desc.fields_by_name.get(name)
    if fd is None:
        for f in desc.fields:
            if f.json_name == name:
                return f
    return fd


class FieldPath:
    """A dotted field path resolved against a message type (path variables, body field)."""

    def __init__(self, desc: Descriptor, dotted: str) -> None:
        self.text = dotted
        self.names = tuple(dotted.split("."))
        self.fields: list[FieldDescriptor] = []
        d: Descriptor | None = desc
        for i, part in enumerate(self.names):
            if d is None:
                raise ValueError(f"{dotted!r}: {self.names[i - 1]!r} is not a message field")
            fd = d.fields_by_name.get(part)
            if fd is None:
                raise ValueError(f"{desc.full_name} has no field {dotted!r}")
            if i < len(self.names) - 1 and (fd.is_repeated or fd.message_type is None):
                raise ValueError(f"{dotted!r}: {part!r} is not a singular message field")
            self.fields.append(fd)
            d = fd.message_type
        self.leaf = self.fields[-1]

    def parent(self, msg: Message) -> Message:
        for fd in self.fields[:-1]:
            msg = getattr(msg, fd.name)
        return msg

    def set_text(self, msg: Message, text: str) -> None:
        """Set from a path variable; repeated fields take comma-separated values (grpc-gateway)."""
        leaf = self.leaf
        values = text.split(",") if leaf.is_repeated else [text]
        parent = self.parent(msg)
        if leaf.is_repeated:
            parent.ClearField(leaf.name)  # the path wins over the body
        _set_values(parent, leaf, values, f'value for path parameter "{self.text}"')

    def get(self, msg: Message) -> Any:
        for fd in self.fields[:-1]:
            if not msg.HasField(fd.name):
                return None
            msg = getattr(msg, fd.name)
        return getattr(msg, self.leaf.name)


class QueryBinder:
    """Binds query parameters (or form fields) to the fields not bound by the path or the body."""

    def __init__(self, desc: Descriptor, bound: Iterable[tuple[str, ...]] = ()) -> None:
        self.desc = desc
        self.bound = [tuple(b) for b in bound]

    def _is_bound(self, path: list[str], fields: list[FieldDescriptor]) -> bool:
        if not self.bound:
            return False
        names = [f.name for f in fields]
        for prefix in self.bound:
            if tuple(names[: len(prefix)]) == prefix:
                return True
        return False

    def bind(self, msg: Message, pairs: Iterable[tuple[str, str]], what: str = "query parameter") -> None:
        grouped: dict[str, list[str]] = {}
        for k, v in pairs:
            grouped.setdefault(k, []).append(v)
        for key, values in grouped.items():
            if key in RESERVED_PARAMS:
                continue
            m = _MAP_KEY.match(key)
            if m:
                key, values = m.group(1), [m.group(2), *values]
            self._bind_one(msg, key, values, what)

    def _bind_one(self, msg: Message, key: str, values: list[str], what: str) -> None:
        parts = key.split(".")
        desc = self.desc
        fields: list[FieldDescriptor] = []
        for i, part in enumerate(parts):
            fd = _lookup(desc, part)
            if fd is None:
                return  # an unknown parameter is not an error (it may be for a proxy or the client)
            fields.append(fd)
            if i < len(parts) - 1:
                if fd.message_type is None or fd.is_repeated or fd.message_type.GetOptions().map_entry:
                    raise invalid_argument(f'invalid {what} "{key}": "{part}" is not a message field')
                desc = fd.message_type
        if self._is_bound(parts, fields):
            return
        target = msg
        for fd in fields[:-1]:
            target = getattr(target, fd.name)
        leaf = fields[-1]
        oneof = leaf.containing_oneof
        if oneof is not None and target.WhichOneof(oneof.name) is not None:
            raise invalid_argument(f'invalid {what} "{key}": a field of oneof "{oneof.name}" is already set')
        _set_values(target, leaf, values, f'{what} "{key}"')


def set_field_text(msg: Message, fd: FieldDescriptor, text: str, label: str) -> None:
    """Set one singular field from text (used for Last-Event-ID -> after_seq and form metadata)."""
    try:
        setattr(msg, fd.name, _parse_scalar(fd, text))
    except TextError as e:
        raise invalid_argument(f"invalid {label}: {e}") from None


__all__ = ["FieldPath", "QueryBinder", "RESERVED_PARAMS", "RpcFailure", "TextError", "set_field_text"]
