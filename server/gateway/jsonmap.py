"""The proto3 JSON mapping, compiled once per message type.

``json_format`` walks descriptors on every call; on the hot path (every streamed message) that costs
more than the rest of the gateway. Here each message type gets a generated Python function
``message -> JSON-able value`` and a table of per-field decoders, built on first use and cached by
descriptor. Output follows json_format with ``preserving_proto_field_name=True`` and
``always_print_fields_with_no_presence=True`` (tests compare the two), plus one rule from
grpc-gateway's ``EmitUnpopulated``: an unset singular message field is emitted as ``null`` instead of
being left out, so every field appears. Unset oneof members and proto3 ``optional`` fields are
omitted (as both references do). int64 kinds are strings, bytes are base64, enums are names (numbers
when unknown), NaN/Infinity are strings, well-known types use their special forms.

Input accepts proto names and JSON (lowerCamel) names, numbers or strings for numeric kinds, enum
names or numbers, standard or URL-safe base64 with or without padding. An unknown field is an error naming it
(with the closest known name), unlike grpc-gateway's default ``DiscardUnknown``: a dropped ``"max_tokens"`` or
``"messagez"`` left callers guessing why their request did not do what it said. An unknown enum value lists the
accepted names. Errors raise ``JsonError`` naming the field path.

Over 600 lines on purpose: one concern, the mapping both ways (encoders and decoders share the type tables, the
well-known types' forms, the field naming and the error type), compiled per descriptor and cached.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
import keyword
import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal.type_checkers import ToShortestFloat
from google.protobuf.message import Message

Encoder = Callable[[Message], Any]
FieldDecoder = Callable[[Message, Any, str], None]
Decoder = Callable[[Any, Message, str], None]

_FD = FieldDescriptor
INT64_TYPES = frozenset({_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64, _FD.TYPE_UINT64, _FD.TYPE_FIXED64})
INT32_TYPES = frozenset({_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32, _FD.TYPE_UINT32, _FD.TYPE_FIXED32})
INT_RANGES = {
    _FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1),
    _FD.TYPE_FIXED32: (0, 2**32 - 1),
    _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1),
    _FD.TYPE_FIXED64: (0, 2**64 - 1),
}
TYPE_NAMES = {
    _FD.TYPE_DOUBLE: "double",
    _FD.TYPE_FLOAT: "float",
    _FD.TYPE_INT64: "int64",
    _FD.TYPE_UINT64: "uint64",
    _FD.TYPE_INT32: "int32",
    _FD.TYPE_FIXED64: "fixed64",
    _FD.TYPE_FIXED32: "fixed32",
    _FD.TYPE_BOOL: "bool",
    _FD.TYPE_STRING: "string",
    _FD.TYPE_BYTES: "bytes",
    _FD.TYPE_UINT32: "uint32",
    _FD.TYPE_ENUM: "enum",
    _FD.TYPE_SFIXED32: "sfixed32",
    _FD.TYPE_SFIXED64: "sfixed64",
    _FD.TYPE_SINT32: "sint32",
    _FD.TYPE_SINT64: "sint64",
    _FD.TYPE_MESSAGE: "message",
    _FD.TYPE_GROUP: "group",
}

WRAPPERS = frozenset(
    "google.protobuf." + n
    for n in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)
# Message types whose JSON form is not an object of their fields.
SPECIAL_TYPES = WRAPPERS | {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
    "google.protobuf.Empty",
}
_FLOAT32_MAX = 3.4028234663852886e38


class JsonError(ValueError):
    """A JSON value that does not fit the message; ``path`` names the field (``a.b[2].c``)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f'invalid value for field "{path}": {reason}' if path else reason)


class UnknownFieldsError(JsonError):
    """Keys of a JSON object that name no field of its message; ``path`` is the first one's full path."""

    def __init__(self, path: str, names: list[str], desc: Descriptor) -> None:
        fields = [_join(path, name) for name in names]
        quoted = ", ".join(f'"{f}"' for f in fields)
        reason = f"unknown field{'s' if len(fields) > 1 else ''} {quoted} in {desc.full_name}"
        hint = _closest_field(names[0], desc) if len(names) == 1 else None
        if hint:
            reason += f' (did you mean "{_join(path, hint)}"?)'
        ValueError.__init__(self, reason)
        self.path = fields[0]
        self.reason = reason
        self.fields = fields


def _closest_field(name: str, desc: Descriptor) -> str | None:
    """A field of ``desc`` spelled like ``name``, or one of that name a level down (``max_tokens`` is
    ``config.max_tokens`` in a GenerateRequest)."""
    close = difflib.get_close_matches(name, [fd.name for fd in desc.fields], n=1)
    if close:
        return close[0]
    for fd in desc.fields:
        mt = fd.message_type
        if mt is not None and not fd.is_repeated and mt.full_name not in SPECIAL_TYPES:
            sub = mt.fields_by_name.get(name) or next((f for f in mt.fields if f.json_name == name), None)
            if sub is not None:
                return f"{fd.name}.{sub.name}"
    return None


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        s = v if len(v) <= 40 else v[:37] + "..."
        return f'"{s}"'
    return repr(v)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ================================================================== encoding (message -> JSON value)


def _b64(b: bytes) -> str:
    return binascii.b2a_base64(b, newline=False).decode("ascii")


def _double(v: float) -> Any:
    if v - v == 0:  # finite
        return v
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def _float(v: float) -> Any:
    if v - v == 0:
        return ToShortestFloat(v) if v else v
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


_TS_MIN, _TS_MAX = -62135596800, 253402300799  # 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z
_EPOCH = datetime.datetime(1970, 1, 1)
# The last whole second formatted: a stream's messages mostly carry times of the same second.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _enc_timestamp(m: Message) -> str:
    """ToJsonString's output (RFC 3339, 'Z', 0, 3, 6 or 9 fractional digits) for ~a third of its cost: it is
    on every streamed message that carries a time (a chat turn's tokens), where ToJsonString took ~3 us."""
    global _last_second
    seconds = m.seconds
    nanos = m.nanos
    if not 0 <= nanos < 1_000_000_000:
        return m.ToJsonString()  # its ValueError
    last = _last_second
    if last[0] == seconds:
        head = last[1]
    else:
        if not _TS_MIN <= seconds <= _TS_MAX:
            return m.ToJsonString()
        head = (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()
        _last_second = (seconds, head)
    if nanos == 0:
        return head + "Z"
    if nanos % 1_000_000 == 0:
        return f"{head}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{head}.{nanos // 1000:06d}Z"
    return f"{head}.{nanos:09d}Z"


def _enc_duration(m: Message) -> str:
    return m.ToJsonString()


def _enc_field_mask(m: Message) -> str:
    try:
        return m.ToJsonString()
    except ValueError:
        # Paths that have no lowerCamel form (e.g. upper-case letters) are written as they are
        # rather than failing the whole response.
        return ",".join(m.paths)


def _enc_struct(m: Message) -> dict[str, Any]:
    return {k: _enc_value(v) for k, v in m.fields.items()}


def _enc_list_value(m: Message) -> list[Any]:
    return [_enc_value(v) for v in m.values]


def _enc_value(m: Message) -> Any:
    which = m.WhichOneof("kind")
    if which is None or which == "null_value":
        return None
    if which == "number_value":
        v = m.number_value
        if v - v != 0:
            raise ValueError("Infinity/NaN cannot be serialized in google.protobuf.Value")
        return v
    if which == "string_value":
        return m.string_value
    if which == "bool_value":
        return m.bool_value
    if which == "struct_value":
        return _enc_struct(m.struct_value)
    return _enc_list_value(m.list_value)


def _enc_empty(m: Message) -> dict[str, Any]:
    return {}


def find_message_type(type_url: str) -> Descriptor:
    name = type_url.rsplit("/", 1)[-1]
    try:
        return descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        raise TypeError(f"cannot resolve Any type {type_url!r}: the message type is not registered") from None


def _enc_any(m: Message) -> dict[str, Any]:
    if not m.type_url and not m.value:
        return {}
    desc = find_message_type(m.type_url)
    sub = message_factory.GetMessageClass(desc).FromString(m.value)
    value = encoder(desc)(sub)
    if desc.full_name in SPECIAL_TYPES:
        return {"@type": m.type_url, "value": value}
    out = {"@type": m.type_url}
    out.update(value)
    return out


_SPECIAL_ENCODERS: dict[str, Encoder] = {
    "google.protobuf.Timestamp": _enc_timestamp,
    "google.protobuf.Duration": _enc_duration,
    "google.protobuf.FieldMask": _enc_field_mask,
    "google.protobuf.Struct": _enc_struct,
    "google.protobuf.Value": _enc_value,
    "google.protobuf.ListValue": _enc_list_value,
    "google.protobuf.Any": _enc_any,
    "google.protobuf.Empty": _enc_empty,
}

# All generated encoders live in one namespace so that mutually recursive types resolve by name at
# call time.
_NS: dict[str, Any] = {"_b64": _b64, "_double": _double, "_float": _float}
_ENCODERS: dict[Descriptor, Encoder] = {}
_ENCODER_NAMES: dict[Descriptor, str] = {}


def _attr(obj: str, name: str) -> str:
    return f"getattr({obj}, {name!r})" if keyword.iskeyword(name) else f"{obj}.{name}"


def _encoder_name(desc: Descriptor, pending: list[Descriptor]) -> str:
    name = _ENCODER_NAMES.get(desc)
    if name is None:
        name = f"_enc{len(_ENCODER_NAMES)}"
        _ENCODER_NAMES[desc] = name
        pending.append(desc)
    return name


def _value_expr(fd: FieldDescriptor, v: str, pending: list[Descriptor]) -> str:
    """Python expression converting the field value held in expression ``v`` (one element)."""
    t = fd.type
    if t in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP):
        return f"{_encoder_name(fd.message_type, pending)}({v})"
    if t == _FD.TYPE_ENUM:
        if fd.enum_type.full_name == "google.protobuf.NullValue":
            return "None"
        table = f"_names_{id(fd.enum_type)}"
        _NS[table] = {ev.number: ev.name for ev in fd.enum_type.values}
        return f"{table}.get({v}, {v})"
    if t in INT64_TYPES:
        return f"str({v})"
    if t == _FD.TYPE_BYTES:
        return f"_b64({v})"
    if t == _FD.TYPE_DOUBLE:
        return f"_double({v})"
    if t == _FD.TYPE_FLOAT:
        return f"_float({v})"
    return v  # string, bool, 32-bit ints


def _field_expr(fd: FieldDescriptor, obj: str, pending: list[Descriptor]) -> str:
    """Expression for the JSON of field ``fd`` of the message in expression ``obj``."""
    get = _attr(obj, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        kf, vf = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        if kf.type == _FD.TYPE_BOOL:
            kexpr = "('true' if k else 'false')"
        elif kf.type == _FD.TYPE_STRING:
            kexpr = "k"
        else:
            kexpr = "str(k)"
        vexpr = _value_expr(vf, "v", pending)
        if kexpr == "k" and vexpr == "v":
            return f"dict({get})"
        return f"{{{kexpr}: {vexpr} for k, v in {get}.items()}}"
    if fd.is_repeated:
        vexpr = _value_expr(fd, "x", pending)
        return f"list({get})" if vexpr == "x" else f"[{vexpr} for x in {get}]"
    return _value_expr(fd, get, pending)


def _compile_message(desc: Descriptor, pending: list[Descriptor]) -> str:
    name = _ENCODER_NAMES[desc]
    always: list[str] = []
    conditional: list[str] = []
    oneofs: dict[str, list[FieldDescriptor]] = {}
    for fd in desc.fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            oneofs.setdefault(oneof.name, []).append(fd)
            continue
        expr = _field_expr(fd, "m", pending)
        if fd.is_repeated or not fd.has_presence:
            always.append(f"{fd.name!r}: {expr}")
        elif fd.message_type is not None:
            always.append(f"{fd.name!r}: ({expr} if m.HasField({fd.name!r}) else None)")
        else:  # proto2 scalars with presence
            conditional.append(f"    if m.HasField({fd.name!r}):\n        d[{fd.name!r}] = {expr}")
    for oneof_name, members in oneofs.items():
        lines = [f"    w = m.WhichOneof({oneof_name!r})"]
        for i, fd in enumerate(members):
            kw = "if" if i == 0 else "elif"
            lines.append(f"    {kw} w == {fd.name!r}:\n        d[{fd.name!r}] = {_field_expr(fd, 'm', pending)}")
        conditional.append("\n".join(lines))
    body = ", ".join(always)
    if not conditional:
        return f"def {name}(m):\n    return {{{body}}}\n"
    return f"def {name}(m):\n    d = {{{body}}}\n" + "\n".join(conditional) + "\n    return d\n"


def _wrapper_encoder(desc: Descriptor) -> Encoder:
    fd = desc.fields_by_name["value"]
    pending: list[Descriptor] = []
    src = f"def _w(m):\n    return {_value_expr(fd, 'm.value', pending)}\n"
    ns = dict(_NS)
    exec(src, ns)  # noqa: S102 - generated from descriptors, not user input
    return ns["_w"]


def encoder(desc: Descriptor) -> Encoder:
    """The compiled ``message -> JSON value`` function for a message type."""
    fn = _ENCODERS.get(desc)
    if fn is not None:
        return fn
    pending: list[Descriptor] = []
    _encoder_name(desc, pending)
    while pending:
        d = pending.pop()
        fname = _ENCODER_NAMES[d]
        if d.full_name in _SPECIAL_ENCODERS:
            _NS[fname] = _SPECIAL_ENCODERS[d.full_name]
        elif d.full_name in WRAPPERS:
            _NS[fname] = _wrapper_encoder(d)
        else:
            exec(_compile_message(d, pending), _NS)  # noqa: S102
        _ENCODERS[d] = _NS[fname]
    return _ENCODERS[desc]


def field_encoder(fd: FieldDescriptor) -> Encoder:
    """``message -> JSON of one field`` (for HttpRule.response_body)."""
    pending: list[Descriptor] = []
    expr = _field_expr(fd, "m", pending)
    if fd.message_type is not None and not fd.is_repeated:
        expr = f"({expr} if m.HasField({fd.name!r}) else None)"
    for d in list(pending):
        encoder(d)
    name = f"_fenc{id(fd)}"
    exec(f"def {name}(m):\n    return {expr}\n", _NS)  # noqa: S102
    return _NS[name]


def to_json(msg: Message) -> Any:
    return encoder(msg.DESCRIPTOR)(msg)


# ================================================================== decoding (JSON value -> message)

_INT_RE = re.compile(r"-?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")


def convert_int(v: Any, t: int, path: str) -> int:
    lo, hi = INT_RANGES[t]
    tv = type(v)
    if tv is int:
        out = v
    elif tv is float:
        if not v.is_integer():
            raise JsonError(path, f"expected an integer ({TYPE_NAMES[t]}), got {_describe(v)}")
        out = int(v)
    elif tv is str:
        if _INT_RE.match(v):
            out = int(v)
        elif _FLOAT_RE.match(v) and float(v).is_integer():
            out = int(float(v))
        else:
            raise JsonError(path, f"expected an integer ({TYPE_NAMES[t]}), got {_describe(v)}")
    else:
        raise JsonError(path, f"expected an integer ({TYPE_NAMES[t]}), got {_describe(v)}")
    if out < lo or out > hi:
        raise JsonError(path, f"{out} is out of range for {TYPE_NAMES[t]}")
    return out


def convert_float(v: Any, t: int, path: str) -> float:
    tv = type(v)
    if tv is float or tv is int:
        out = float(v)
    elif tv is str:
        if v == "NaN":
            return math.nan
        if v == "Infinity":
            return math.inf
        if v == "-Infinity":
            return -math.inf
        if not _FLOAT_RE.match(v):
            raise JsonError(path, f"expected a number ({TYPE_NAMES[t]}), got {_describe(v)}")
        out = float(v)
    else:
        raise JsonError(path, f"expected a number ({TYPE_NAMES[t]}), got {_describe(v)}")
    if t == _FD.TYPE_FLOAT and out - out == 0 and abs(out) > _FLOAT32_MAX:
        raise JsonError(path, f"{v} is out of range for float")
    if out - out != 0:
        raise JsonError(path, f"{v} is out of range for {TYPE_NAMES[t]}")
    return out


def decode_base64(v: str) -> bytes:
    s = v.strip().replace("-", "+").replace("_", "/").replace(" ", "+")
    s += "=" * (-len(s) % 4)
    return base64.b64decode(s, validate=True)


def convert_bytes(v: Any, path: str) -> bytes:
    if type(v) is not str:
        raise JsonError(path, f"expected a base64 string, got {_describe(v)}")
    try:
        return decode_base64(v)
    except (binascii.Error, ValueError):
        raise JsonError(path, f"expected a base64 string, got {_describe(v)}") from None


def convert_enum(v: Any, fd: FieldDescriptor, path: str) -> int:
    et = fd.enum_type
    tv = type(v)
    if tv is str:
        ev = et.values_by_name.get(v)
        if ev is None:
            accepted = ", ".join(e.name for e in et.values if e.number or len(et.values) == 1)
            raise JsonError(path, f"unknown value {_describe(v)} for enum {et.full_name} (accepted: {accepted})")
        return ev.number
    if tv is int:
        if et.is_closed and v not in et.values_by_number:
            raise JsonError(path, f"unknown value {v} for enum {et.full_name}")
        if v < -(2**31) or v >= 2**31:
            raise JsonError(path, f"{v} is out of range for enum {et.full_name}")
        return v
    raise JsonError(path, f"expected an enum name or number ({et.full_name}), got {_describe(v)}")


def scalar_converter(fd: FieldDescriptor) -> Callable[[Any, str], Any]:
    """``(json value, path) -> python value`` for a non-message field."""
    t = fd.type
    if t in INT_RANGES:
        return lambda v, p: convert_int(v, t, p)
    if t in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return lambda v, p: convert_float(v, t, p)
    if t == _FD.TYPE_BOOL:

        def conv_bool(v: Any, p: str) -> bool:
            if type(v) is not bool:
                raise JsonError(p, f"expected true or false, got {_describe(v)}")
            return v

        return conv_bool
    if t == _FD.TYPE_STRING:

        def conv_str(v: Any, p: str) -> str:
            if type(v) is not str:
                raise JsonError(p, f"expected a string, got {_describe(v)}")
            return v

        return conv_str
    if t == _FD.TYPE_BYTES:
        return convert_bytes
    if t == _FD.TYPE_ENUM:
        return lambda v, p: convert_enum(v, fd, p)
    raise TypeError(f"not a scalar field: {fd.full_name}")


def _map_key_converter(fd: FieldDescriptor) -> Callable[[str, str], Any]:
    t = fd.type
    if t == _FD.TYPE_STRING:
        return lambda k, p: k
    if t == _FD.TYPE_BOOL:

        def conv(k: str, p: str) -> bool:
            if k == "true":
                return True
            if k == "false":
                return False
            raise JsonError(p, f'map key must be "true" or "false", got "{k}"')

        return conv
    return lambda k, p: convert_int(k, t, p)


def _delegate_decoder(v: Any, m: Message, path: str) -> None:
    """Struct, Value, ListValue, Any and Empty: json_format implements these forms exactly."""
    try:
        json_format.ParseDict(v, m)
    except json_format.ParseError as e:
        raise JsonError(path, str(e)) from None


def _string_wkt_decoder(kind: str) -> Decoder:
    def dec(v: Any, m: Message, path: str) -> None:
        if type(v) is not str:
            raise JsonError(path, f"expected a {kind} string, got {_describe(v)}")
        try:
            m.FromJsonString(v)
        except ValueError as e:
            raise JsonError(path, f"invalid {kind} {_describe(v)}: {e}") from None

    return dec


def _wrapper_decoder(desc: Descriptor) -> Decoder:
    fd = desc.fields_by_name["value"]
    conv = scalar_converter(fd)

    def dec(v: Any, m: Message, path: str) -> None:
        m.value = conv(v, path)

    return dec


_DECODERS: dict[Descriptor, Decoder] = {}


def decoder(desc: Descriptor) -> Decoder:
    """The ``(json value, message, path) -> None`` function that merges JSON into a message."""
    dec = _DECODERS.get(desc)
    if dec is not None:
        return dec
    name = desc.full_name
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"):
        dec = _string_wkt_decoder(name.rsplit(".", 1)[1])
    elif name in WRAPPERS:
        dec = _wrapper_decoder(desc)
    elif name in SPECIAL_TYPES:
        dec = _delegate_decoder
    else:
        handlers: dict[str, FieldDecoder] = {}

        def dec(js: Any, m: Message, path: str) -> None:
            if type(js) is not dict:
                raise JsonError(path, f"expected an object, got {_describe(js)}")
            get = handlers.get
            unknown = None
            for k, v in js.items():
                h = get(k)
                if h is not None:
                    h(m, v, path)
                elif unknown is None:
                    unknown = [k]
                else:
                    unknown.append(k)
            if unknown:
                raise UnknownFieldsError(path, unknown, desc)

        _DECODERS[desc] = dec  # before building handlers: recursive types refer to it
        for fd in desc.fields:
            h = field_decoder(fd)
            handlers[fd.name] = h
            handlers[fd.json_name] = h
        return dec
    _DECODERS[desc] = dec
    return dec


def field_decoder(fd: FieldDescriptor) -> FieldDecoder:
    """``(message, json value, parent path) -> None`` that sets one field from JSON."""
    name = fd.name
    mt = fd.message_type
    oneof = fd.containing_oneof
    if mt is not None and mt.GetOptions().map_entry:
        kconv = _map_key_converter(mt.fields_by_name["key"])
        vf = mt.fields_by_name["value"]
        if vf.message_type is not None:
            vdec = decoder(vf.message_type)

            def set_map(m: Message, v: Any, path: str) -> None:
                if v is None:
                    m.ClearField(name)
                    return
                p = _join(path, name)
                if type(v) is not dict:
                    raise JsonError(p, f"expected an object, got {_describe(v)}")
                target = getattr(m, name)
                for k, x in v.items():
                    kp = f"{p}[{k}]"
                    sub = target.get_or_create(kconv(k, kp))
                    if x is not None or vf.message_type.full_name == "google.protobuf.Value":
                        vdec(x, sub, kp)

            return set_map
        vconv = scalar_converter(vf)

        def set_scalar_map(m: Message, v: Any, path: str) -> None:
            if v is None:
                m.ClearField(name)
                return
            p = _join(path, name)
            if type(v) is not dict:
                raise JsonError(p, f"expected an object, got {_describe(v)}")
            target = getattr(m, name)
            for k, x in v.items():
                kp = f"{p}[{k}]"
                target[kconv(k, kp)] = vconv(x, kp)

        return set_scalar_map

    if fd.is_repeated:
        if mt is not None:
            edec = decoder(mt)

            def set_messages(m: Message, v: Any, path: str) -> None:
                if v is None:
                    m.ClearField(name)
                    return
                p = _join(path, name)
                if type(v) is not list:
                    raise JsonError(p, f"expected an array, got {_describe(v)}")
                target = getattr(m, name)
                for i, x in enumerate(v):
                    if x is None and mt.full_name != "google.protobuf.Value":
                        raise JsonError(f"{p}[{i}]", "null is not allowed in a repeated field")
                    edec(x, target.add(), f"{p}[{i}]")

            return set_messages
        conv = scalar_converter(fd)

        def set_list(m: Message, v: Any, path: str) -> None:
            if v is None:
                m.ClearField(name)
                return
            p = _join(path, name)
            if type(v) is not list:
                raise JsonError(p, f"expected an array, got {_describe(v)}")
            getattr(m, name).extend([conv(x, f"{p}[{i}]") for i, x in enumerate(v)])

        return set_list

    def check_oneof(m: Message, path: str) -> None:
        current = m.WhichOneof(oneof.name)
        if current is not None and current != name:
            raise JsonError(_join(path, name), f'only one field of oneof "{oneof.name}" may be set, "{current}" is set')

    if mt is not None:
        sdec = decoder(mt)
        is_value = mt.full_name == "google.protobuf.Value"

        def set_message(m: Message, v: Any, path: str) -> None:
            if v is None and not is_value:
                m.ClearField(name)
                return
            if oneof is not None:
                check_oneof(m, path)
            sub = getattr(m, name)
            sub.SetInParent()
            sdec(v, sub, _join(path, name))

        return set_message
    conv = scalar_converter(fd)
    is_null_enum = fd.type == _FD.TYPE_ENUM and fd.enum_type.full_name == "google.protobuf.NullValue"

    def set_scalar(m: Message, v: Any, path: str) -> None:
        if v is None:
            if is_null_enum:
                setattr(m, name, 0)
            else:
                m.ClearField(name)
            return
        if oneof is not None:
            check_oneof(m, path)
        setattr(m, name, conv(v, _join(path, name)))

    return set_scalar


def from_json(value: Any, msg: Message, path: str = "") -> Message:
    """Merge a parsed JSON value into ``msg`` (raises JsonError) and return it."""
    decoder(msg.DESCRIPTOR)(value, msg, path)
    return msg
