"""Trace ids: accept `x-trace-id` (or the trace id of a W3C traceparent), else mint one; echo it in the initial
metadata and bind it to every log line of the call. With OpenTelemetry on, the call is a span (infra/tracing.py)
and, without an x-trace-id, the logged id is the span's trace id, so a log line leads to its trace."""

from __future__ import annotations

import os
import re

from typecase.server.infra import tracing
from typecase.server.logs import trace_id_var
from typecase.server.rpc.interceptors import WrappingInterceptor, initial_metadata_sent, send_initial_metadata

TRACE_HEADER = "x-trace-id"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_SAFE_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def trace_id_from(metadata) -> str:
    traceparent = None
    for key, value in metadata or ():
        if key == TRACE_HEADER and isinstance(value, str) and _SAFE_TRACE_ID.match(value):
            return value
        if key == "traceparent" and isinstance(value, str):
            traceparent = _TRACEPARENT.match(value.strip().lower())
    # 32 random hex digits as a uuid4's hex would be, without the UUID object (~0.5 us against ~2 on every call
    # that brings no trace id; the gateway's calls bring one, gRPC clients mostly do not)
    return traceparent.group(1) if traceparent else os.urandom(16).hex()


class TraceInterceptor(WrappingInterceptor):
    def around(self, details, context, rpc_type):
        return _Traced(details, context)


class _Traced:
    """One call's trace id and span; a plain async context manager (an @asynccontextmanager generator costs a few
    microseconds more on every call)."""

    __slots__ = ("details", "context", "span", "token")

    def __init__(self, details, context):
        self.details = details
        self.context = context

    async def __aenter__(self) -> None:
        details = self.details
        span = self.span = tracing.rpc_span(details.method, details.invocation_metadata)
        span.__enter__()
        try:
            metadata = details.invocation_metadata
            trace_id = (
                trace_id_from(metadata)
                if not tracing.enabled()
                else (_given_trace_id(metadata) or tracing.current_trace_id() or trace_id_from(metadata))
            )
            token = self.token = trace_id_var.set(trace_id)
            try:
                await send_initial_metadata(self.context, ((TRACE_HEADER, trace_id),))  # off the call's path
            except BaseException:
                _reset(token)
                raise
        except BaseException as raised:
            span.__exit__(type(raised), raised, raised.__traceback__)
            raise

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            try:  # before grpc sends anything after an exception that no inner interceptor turned into a status
                await initial_metadata_sent()
            finally:
                _reset(self.token)
        except BaseException as raised:
            self.span.__exit__(type(raised), raised, raised.__traceback__)
            raise
        self.span.__exit__(exc_type, exc, tb)
        return False


def _reset(token) -> None:
    try:
        trace_id_var.reset(token)
    except ValueError:  # a stream finalised from another context; its task ends with the call anyway
        pass


def _given_trace_id(metadata) -> str | None:
    for key, value in metadata or ():
        if key == TRACE_HEADER and isinstance(value, str) and _SAFE_TRACE_ID.match(value):
            return value
    return None
