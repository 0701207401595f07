"""Traffic stats for every surface, not only the LLM API proxy.

The admin stats contract has three sources (API, OPENAI, PROXY) but only the proxy recorded requests, so the
console's traffic view showed zeros after a newcomer's first API and OpenAI-compatible calls. Here the other two
record into the same bounded RequestStats (recent requests and errors in fixed-size deques, totals keyed by at
most proxy_stats_max_keys paths and models): an interceptor for every gRPC call, which the REST, NDJSON, SSE and
WebSocket routes reach through the in-process gateway too (source API), and an ASGI wrapper around the
OpenAI- and Anthropic-compatible routes (source OPENAI: the contract has one source for the vendor-compatible
surfaces). Calls that would drown the view in its own polling (health checks, reflection, the admin stats and
log reads the traffic page makes) are not recorded.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import BaseRoute, Route

from typecase.server.gateway.app import SEND_OBSERVER
from typecase.server.gateway.errors import http_status
from typecase.server.logs import trace_id_var
from typecase.server.proxy.stats import RequestRecord, RequestStats
from typecase.server.rpc.interceptors import WrappingInterceptor, call_status
from typecase.v1 import admin_pb2

SOURCE_API = admin_pb2.REQUEST_SOURCE_API
SOURCE_OPENAI = admin_pb2.REQUEST_SOURCE_OPENAI
# Not traffic: probes and the traffic page's own reads.
UNRECORDED_PREFIXES = (
    "/grpc.health.",
    "/grpc.reflection.",
    "/typecase.v1.AdminService/GetStats",
    "/typecase.v1.AdminService/ListErrors",
    "/typecase.v1.AdminService/StreamLogs",
    "/typecase.v1.AdminService/ListLogs",
)


def _finish(stats: RequestStats, record: RequestRecord, reason: str) -> None:
    failed = record.status >= 400 or record.status == 0
    stats.record(record, (reason, 0, "") if failed else None, reason if failed else "")


class TrafficInterceptor(WrappingInterceptor):
    """Records each gRPC call (native or transcoded) as an API request."""

    def __init__(self, stats: RequestStats):
        self.stats = stats

    def around(self, details, context, rpc_type):
        if details.method.startswith(UNRECORDED_PREFIXES):
            return _UNRECORDED
        return _Recorded(self.stats, details, context, rpc_type)


class _Unrecorded:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return False


_UNRECORDED = _Unrecorded()


class _Recorded:
    """One call's record; a plain async context manager (an @asynccontextmanager generator costs a few
    microseconds more on every call)."""

    __slots__ = ("stats", "context", "method", "stream", "arrived", "started", "first")

    def __init__(self, stats: RequestStats, details, context, rpc_type: str):
        self.stats = stats
        self.context = context
        self.method = details.method
        self.stream = rpc_type in ("server_stream", "bidi_stream")
        self.first: float | None = None

    def on_message(self) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.started

    async def __aenter__(self):
        # Only the clocks here: the record is made when the call ends, not before its upstream request.
        self.arrived = time.time()
        self.started = time.perf_counter()
        return self.on_message if self.stream else None

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        code = call_status(self.context, exc_type)
        record = RequestRecord(
            trace_id_var.get(),
            self.arrived,
            SOURCE_API,
            "POST",
            self.method,
            status=http_status(code),
            ttfb=self.first,
            latency=time.perf_counter() - self.started,
            stream=self.stream,
        )
        _finish(self.stats, record, code.name)
        return False


def recorded(routes: list[BaseRoute], stats: RequestStats, source: int = SOURCE_OPENAI) -> list[BaseRoute]:
    """The routes, each Route's ASGI app wrapped to record its requests under `source`."""
    for route in routes:
        if isinstance(route, Route):
            route.app = _recording(route.app, stats, source)
    return routes


def _recording(app: Any, stats: RequestStats, source: int) -> Any:
    async def record_request(scope, receive, send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        record = RequestRecord(trace_id_var.get(), time.time(), source, scope["method"], scope["path"])
        started = time.perf_counter()
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        def watch(message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                record.stream = any(
                    k == b"content-type" and v.startswith(b"text/event-stream") for k, v in message.get("headers", ())
                )
            elif message["type"] == "http.response.body":
                if record.ttfb is None:
                    record.ttfb = time.perf_counter() - started
                record.response_bytes += len(message.get("body", b""))

        async def watching_send(message) -> None:
            watch(message)
            await send(message)

        observers = scope.get(SEND_OBSERVER)
        if observers is not None:  # the gateway's send wrapper calls `watch`: no second wrapper
            observers.append(watch)
            watched_send = send
        else:
            watched_send = watching_send
        try:
            await app(scope, counting_receive, watched_send)
        finally:
            record.latency = time.perf_counter() - started
            record.request_bytes = received
            _finish(stats, record, f"HTTP_{record.status or 499}")

    return record_request
