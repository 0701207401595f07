"""The interceptor chain on a real grpc.aio server: domain errors, unexpected errors, trace ids in logs, metrics;
the same behaviour whether the interceptors are registered separately or as one WrappingChain."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from typecase.server.logs import trace_id_var
from typecase.server.rpc.errors import STATUS_DETAILS_KEY, ErrorInterceptor, TypecaseError
from typecase.server.rpc.interceptors import WrappingChain
from typecase.server.rpc.metrics import MetricsInterceptor
from typecase.server.rpc.trace import TraceInterceptor

log = logging.getLogger("test.servicer")


class Servicer(health_pb2_grpc.HealthServicer):
    """Health's messages serve as a convenient real contract; `service` picks the behaviour."""

    async def Check(self, request, context):
        log.warning("handling %s", request.service)
        if request.service == "domain-error":
            raise TypecaseError(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "session 's1' not found", {"id": "s1"})
        if request.service == "bug":
            raise KeyError("boom")
        if request.service == "set-code":
            context.set_code(grpc.StatusCode.UNIMPLEMENTED)
            context.set_details("Method not implemented!")
            raise NotImplementedError("Method not implemented!")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(self, request, context):
        for _ in range(3):
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        if request.service == "fail-mid-stream":
            raise TypecaseError(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "upstream went away")


@pytest.fixture(params=["separate", "chained"])
async def stub(request):
    """Every test runs with the interceptors registered one by one and as one WrappingChain (what app.py uses)."""
    members = [TraceInterceptor(), MetricsInterceptor(), ErrorInterceptor()]
    server = grpc.aio.server(interceptors=members if request.param == "separate" else [WrappingChain(members)])
    health_pb2_grpc.add_HealthServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)
    await server.stop(0)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(error.trailing_metadata())[STATUS_DETAILS_KEY]
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def test_domain_error_becomes_code_and_error_info(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Check(health_pb2.HealthCheckRequest(service="domain-error"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert failure.value.details() == "session 's1' not found"
    info = error_info(failure.value)
    assert (info.reason, info.domain, dict(info.metadata)) == ("NOT_FOUND", "typecase", {"id": "s1"})


async def test_unexpected_error_is_internal_with_trace_id_and_logged_once(stub, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Check(health_pb2.HealthCheckRequest(service="bug"), metadata=(("x-trace-id", "t-123"),))
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert "t-123" in failure.value.details()
    assert "boom" not in failure.value.details()  # internals stay in the log
    assert error_info(failure.value).reason == "INTERNAL"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and "Check" in errors[0].getMessage()


async def test_status_chosen_by_the_handler_is_kept(stub, caplog):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Check(health_pb2.HealthCheckRequest(service="set-code"))
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_trace_id_reaches_logs_and_initial_metadata(stub, caplog):
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            seen.append(trace_id_var.get())

    handler = Capture()
    log.addHandler(handler)
    try:
        call = stub.Check(health_pb2.HealthCheckRequest(service="ok"), metadata=(("x-trace-id", "abc-1"),))
        await call
        assert ("x-trace-id", "abc-1") in tuple(await call.initial_metadata())
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        call = stub.Check(health_pb2.HealthCheckRequest(service="ok"), metadata=(("traceparent", traceparent),))
        await call
        assert ("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736") in tuple(await call.initial_metadata())
    finally:
        log.removeHandler(handler)
    assert seen == ["abc-1", "4bf92f3577b34da6a3ce929d0e0e4736"]


async def test_stream_error_after_messages_and_metrics(stub):
    labels = {"grpc_type": "server_stream", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Watch"}

    def value(name: str, **extra) -> float:
        return REGISTRY.get_sample_value(name, {**labels, **extra}) or 0.0

    sent_before = value("grpc_server_msg_sent_total")
    failed_before = value("grpc_server_handled_total", grpc_code="UNAVAILABLE")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="fail-mid-stream")):
            received.append(reply)
    assert len(received) == 3
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(failure.value).reason == "UPSTREAM_UNAVAILABLE"
    assert value("grpc_server_msg_sent_total") == sent_before + 3
    assert value("grpc_server_handled_total", grpc_code="UNAVAILABLE") == failed_before + 1
