"""The compiled proto3 JSON mapping against json_format, on random and edge-case messages."""

from __future__ import annotations

import math
import random

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor import FieldDescriptor as FD

from typecase.server.gateway import jsonmap

_INT_RANGES = jsonmap.INT_RANGES


def _scalar(rng: random.Random, fd):
    t = fd.type
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return rng.choice([lo, hi, 0, 1, -1 if lo < 0 else 2, rng.randint(lo, hi)])
    if t == FD.TYPE_DOUBLE:
        return rng.choice([0.0, 1.5, -2.25e300, 1e-300, 3.0, math.inf, -math.inf, math.nan, rng.random()])
    if t == FD.TYPE_FLOAT:
        return rng.choice([0.0, 0.1, 1.5, -3.4e38, 1e-30, 123.456, math.inf, math.nan])
    if t == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FD.TYPE_STRING:
        return rng.choice(["", "x", "héllo ✓", 'quo"te\n', "a" * 50])
    if t == FD.TYPE_BYTES:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(6)))
    if t == FD.TYPE_ENUM:
        return rng.choice([v.number for v in fd.enum_type.values] + ([42] if not fd.enum_type.is_closed else []))
    raise TypeError(t)


def fill(msg, rng: random.Random, depth: int = 0) -> None:
    desc = msg.DESCRIPTOR
    name = desc.full_name
    if name == "google.protobuf.Timestamp":
        msg.seconds, msg.nanos = rng.randint(0, 4_000_000_000), rng.choice([0, 5_000_000, 123_456, 7])
        return
    if name == "google.protobuf.Duration":
        s = rng.randint(0, 10_000)
        msg.seconds, msg.nanos = s, rng.choice([0, 500_000_000, 1_000, 1])
        return
    if name == "google.protobuf.FieldMask":
        msg.paths.extend(rng.sample(["a", "b_c", "d.e_f"], rng.randint(0, 3)))
        return
    if name == "google.protobuf.Struct":
        msg.update({"a": 1.5, "b": "s", "c": [1.0, "x", None, True], "d": {"e": None}})
        return
    if name == "google.protobuf.Value":
        msg.CopyFrom(struct_pb2.Value(string_value="v") if rng.random() < 0.5 else struct_pb2.Value(number_value=2.5))
        return
    if name == "google.protobuf.ListValue":
        msg.extend([1.0, "two", False])
        return
    if name == "google.protobuf.Any":
        msg.Pack(wrappers_pb2.Int64Value(value=5) if rng.random() < 0.5 else msg.__class__())
        if rng.random() < 0.3:
            from gwtest.v1 import library_pb2

            msg.Pack(library_pb2.Author(display_name="X", born=3))
        return
    for fd in desc.fields:
        if rng.random() < 0.3:
            continue
        if fd.containing_oneof is not None and msg.WhichOneof(fd.containing_oneof.name):
            continue
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            kf, vf = mt.fields_by_name["key"], mt.fields_by_name["value"]
            target = getattr(msg, fd.name)
            for _ in range(rng.randrange(3)):
                k = _scalar(rng, kf)
                if vf.message_type is not None:
                    if depth < 2:
                        fill(target[k], rng, depth + 1)
                else:
                    target[k] = _scalar(rng, vf)
            continue
        if fd.is_repeated:
            target = getattr(msg, fd.name)
            for _ in range(rng.randrange(3)):
                if mt is not None:
                    if depth < 2:
                        fill(target.add(), rng, depth + 1)
                else:
                    target.append(_scalar(rng, fd))
            continue
        if mt is not None:
            if depth < 2:
                sub = getattr(msg, fd.name)
                sub.SetInParent()
                fill(sub, rng, depth + 1)
            continue
        setattr(msg, fd.name, _scalar(rng, fd))


def reference(msg):
    return json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def without_unset_messages(value, desc):
    """Our output minus the nulls emitted for unset message fields (json_format leaves them out)."""
    if not isinstance(value, dict) or desc.full_name in jsonmap.SPECIAL_TYPES:
        return value
    out = {}
    for k, v in value.items():
        fd = desc.fields_by_name[k]
        if v is None and fd.message_type is not None and not fd.is_repeated:
            continue
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            vt = mt.fields_by_name["value"].message_type
            out[k] = {mk: without_unset_messages(mv, vt) for mk, mv in v.items()} if vt else v
        elif mt is not None and fd.is_repeated:
            out[k] = [without_unset_messages(x, mt) for x in v]
        elif mt is not None:
            out[k] = without_unset_messages(v, mt)
        else:
            out[k] = v
    return out


def _nan_safe(v):
    if isinstance(v, float) and math.isnan(v):
        return "NaN!"
    if isinstance(v, dict):
        return {k: _nan_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_safe(x) for x in v]
    return v


@pytest.mark.parametrize("seed", range(150))
def test_encoder_matches_json_format(pb, seed):
    rng = random.Random(seed)
    msg = pb.pb2.Everything()
    fill(msg, rng)
    ours = jsonmap.to_json(msg)
    assert without_unset_messages(ours, msg.DESCRIPTOR) == reference(msg)
    # every field is present (oneof members and proto3 optionals only when set)
    for fd in msg.DESCRIPTOR.fields:
        if fd.containing_oneof is None:
            assert fd.name in ours


@pytest.mark.parametrize("seed", range(150))
def test_decoder_round_trips(pb, seed):
    rng = random.Random(seed)
    msg = pb.pb2.Everything()
    fill(msg, rng)
    ours = jsonmap.to_json(msg)
    back = jsonmap.from_json(ours, pb.pb2.Everything())
    assert _nan_safe(jsonmap.to_json(back)) == _nan_safe(ours)
    # json_format's own output (JSON names) decodes to the same message
    camel = json_format.MessageToDict(msg)
    assert _nan_safe(jsonmap.to_json(jsonmap.from_json(camel, pb.pb2.Everything()))) == _nan_safe(ours)


def test_unset_messages_are_null_and_optionals_omitted(pb):
    out = jsonmap.to_json(pb.pb2.Everything())
    assert out["f_message"] is None and out["w_timestamp"] is None and out["w_int64"] is None
    assert "o_string" not in out and "c_string" not in out
    assert out["f_int64"] == "0" and out["r_int64"] == [] and out["m_string_int64"] == {}
    assert out["f_enum"] == "GENRE_UNSPECIFIED" and out["json_named"] == ""


def test_decoder_accepts_both_names_and_lenient_forms(pb):
    msg = jsonmap.from_json(
        {
            "fInt64": 5,
            "f_uint64": "18446744073709551615",
            "f_int32": "12",
            "f_double": "NaN",
            "f_float": "1e3",
            "f_enum": 2,
            "r_enum": ["FICTION", 2],
            "f_bytes": "-_8",
            "customName": "j",
            "w_int64": "7",
            "m_int64_string": {"-3": "x"},
            "m_bool_message": {"true": {"displayName": "A"}},
            "w_timestamp": "2024-01-02T03:04:05.5+01:00",
            "w_duration": "-1.5s",
            "w_field_mask": "fooBar,baz",
        },
        pb.pb2.Everything(),
    )
    assert msg.f_int64 == 5 and msg.f_uint64 == 2**64 - 1 and msg.f_int32 == 12 and math.isnan(msg.f_double)
    assert msg.f_float == 1000 and msg.f_enum == 2 and list(msg.r_enum) == [1, 2] and msg.f_bytes == b"\xfb\xff"
    assert msg.json_named == "j" and msg.w_int64.value == 7 and msg.m_int64_string[-3] == "x"
    assert msg.m_bool_message[True].display_name == "A"
    assert msg.w_timestamp.ToJsonString() == "2024-01-02T02:04:05.500Z"
    assert msg.w_duration.ToJsonString() == "-1.500s" and list(msg.w_field_mask.paths) == ["foo_bar", "baz"]


@pytest.mark.parametrize(
    "value, path, needle",
    [
        ({"f_int32": "abc"}, "f_int32", "expected an integer"),
        ({"f_int32": 2**31}, "f_int32", "out of range"),
        ({"f_bool": "yes"}, "f_bool", "true or false"),
        ({"f_enum": "NOPE"}, "f_enum", "unknown value"),
        ({"f_message": {"born": 1.5}}, "f_message.born", "expected an integer"),
        ({"r_message": [{"born": "x"}]}, "r_message[0].born", "expected an integer"),
        ({"m_string_int64": {"k": "z"}}, "m_string_int64[k]", "expected an integer"),
        ({"f_bytes": "***"}, "f_bytes", "base64"),
        ({"c_string": "a", "c_int64": 1}, "c_int64", "oneof"),
        ({"w_timestamp": "yesterday"}, "w_timestamp", "Timestamp"),
        ({"r_string": "notalist"}, "r_string", "expected an array"),
        ({"f_float": 1e39}, "f_float", "out of range"),
    ],
)
def test_decoder_errors_name_the_field(pb, value, path, needle):
    with pytest.raises(jsonmap.JsonError) as e:
        jsonmap.from_json(value, pb.pb2.Everything())
    assert e.value.path == path
    assert needle in str(e.value)
    assert f'"{path}"' in str(e.value)


def test_any_and_field_encoder(pb):
    msg = pb.pb2.Everything()
    msg.w_any.Pack(pb.pb2.Author(display_name="Z"))
    assert jsonmap.to_json(msg)["w_any"] == {
        "@type": "type.googleapis.com/gwtest.v1.Author",
        "display_name": "Z",
        "born": 0,
    }
    book = pb.pb2.Book(author=pb.pb2.Author(display_name="Q"))
    enc = jsonmap.field_encoder(pb.pb2.Book.DESCRIPTOR.fields_by_name["author"])
    assert enc(book) == {"display_name": "Q", "born": 0}
    assert enc(pb.pb2.Book()) is None


def test_timestamp_json_is_to_json_string():
    """The gateway's own Timestamp formatter writes what protobuf's ToJsonString writes (digits by precision,
    before 1970, both ends of the range, the same second twice) and fails as it does out of range."""
    rng = random.Random(27)
    lo, hi = -62135596800, 253402300799
    seconds = [lo, lo + 1, -1, 0, 1, 951782400, 1_800_000_000, hi - 1, hi]
    seconds += [rng.randint(lo, hi) for _ in range(300)]
    nanos = [0, 1, 7, 999, 1_000, 123_456, 999_999, 1_000_000, 5_000_000, 999_000_000, 999_999_999]
    for s in seconds:
        for n in [*nanos, rng.randrange(1_000_000_000)]:
            for _ in range(2):  # a second just formatted comes from the cache the second time
                ts = timestamp_pb2.Timestamp(seconds=s, nanos=n)
                assert jsonmap._enc_timestamp(ts) == ts.ToJsonString()
    for s, n in [(lo - 1, 0), (hi + 1, 0), (0, -1), (0, 1_000_000_000), (hi, -5)]:
        ts = timestamp_pb2.Timestamp(seconds=s, nanos=n)
        with pytest.raises(ValueError):
            ts.ToJsonString()
        with pytest.raises(ValueError):
            jsonmap._enc_timestamp(ts)
    jsonmap._enc_timestamp(timestamp_pb2.Timestamp(seconds=hi))  # cached: an invalid nanos still fails
    with pytest.raises(ValueError):
        jsonmap._enc_timestamp(timestamp_pb2.Timestamp(seconds=hi, nanos=-1))
