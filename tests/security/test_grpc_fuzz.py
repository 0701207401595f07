"""gRPC fuzzing: hypothesis builds request messages for every unary RPC straight from the descriptors and sends
them with the admin key to a real server. Bad input must come back as a clear status, never INTERNAL or UNKNOWN.

Left out: RestartServer (re-execs the server), and Complete/TestModel (each call runs the local model)."""

from __future__ import annotations

import base64

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY
from typecase.v1 import admin_pb2, auth_pb2, chat_pb2, flow_pb2, knowledge_pb2, llm_pb2, roles_pb2

SKIPPED = {"RestartServer", "Complete", "TestModel"}
MODULES = (auth_pb2, llm_pb2, chat_pb2, knowledge_pb2, flow_pb2, admin_pb2, roles_pb2)
F = FieldDescriptor
texts = st.text(max_size=40)
INTS = {
    F.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_UINT32: st.integers(0, 2**32 - 1),
    F.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    F.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_UINT64: st.integers(0, 2**64 - 1),
    F.TYPE_FIXED64: st.integers(0, 2**64 - 1),
}
WELL_KNOWN = {
    "google.protobuf.Timestamp": st.datetimes().map(lambda d: d.isoformat() + "Z"),
    "google.protobuf.Duration": st.integers(0, 10**6).map(lambda s: f"{s}s"),
    "google.protobuf.FieldMask": st.lists(st.from_regex(r"[a-z][a-zA-Z]{0,12}", fullmatch=True), max_size=3).map(
        ",".join
    ),
    "google.protobuf.Struct": st.dictionaries(
        texts, st.one_of(texts, st.integers(-1000, 1000), st.booleans()), max_size=3
    ),
}


def value_of(field: FieldDescriptor, depth: int):
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in WELL_KNOWN:
            return WELL_KNOWN[name]
        if name.startswith("google.") or depth > 2:
            return st.just({})
        return message_dict(field.message_type, depth + 1)
    if field.enum_type is not None:
        return st.sampled_from([v.name for v in field.enum_type.values])
    if field.type in INTS:
        return INTS[field.type]
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(-1e6, 1e6, allow_nan=False)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
    return texts


def message_dict(descriptor, depth: int = 0):
    fields, oneofs = {}, {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            strategy = st.dictionaries(texts, texts, max_size=2)
        elif field.is_repeated:
            strategy = st.lists(value_of(field, depth), max_size=3)
        else:
            strategy = value_of(field, depth)
        group = field.containing_oneof
        if group is not None and not getattr(group, "has_presence", False) and len(group.fields) > 1:
            oneofs.setdefault(group.name, []).append(st.fixed_dictionaries({field.name: strategy}))
        else:
            fields[field.name] = strategy
    # At most one member of each oneof.
    parts = [
        st.fixed_dictionaries({}, optional=fields),
        *(st.one_of(st.just({}), *members) for members in oneofs.values()),
    ]
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


def unary_methods():
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if not (method.client_streaming or method.server_streaming or method.name in SKIPPED):
                    yield service, method


def test_fuzzed_requests_never_fail_internally(server_factory):
    server = server_factory(
        env={"TYPECASE_RATE_LIMIT_PER_KEY": "1000000/minute", "TYPECASE_RATE_LIMIT_PER_USER": "1000000/minute"}
    ).start()
    server.wait_ready()
    methods = list(unary_methods())
    assert len(methods) >= 60
    with grpc.insecure_channel(server.grpc_target) as channel:
        for service, method in methods:
            fuzz(channel, service, method)


def fuzz(channel, service, method) -> None:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{service.full_name}/{method.name}", request_class.SerializeToString, response_class.FromString
    )

    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(message_dict(method.input_type))
    def check(data):
        request = json_format.ParseDict(data, request_class(), ignore_unknown_fields=True)
        try:
            call(request, metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=30)
        except grpc.RpcError as error:
            assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                f"{method.full_name}: {error.code()} {error.details()} for {data}"
            )

    check()
