"""Prometheus metrics for every RPC, with the names and labels of go-grpc-prometheus so dashboards carry over.

The labelled children of a method are looked up once and kept (prometheus_client's `labels()` validates and locks
on every call; children are never removed here), a few microseconds less on every call's path. A stream's sent
messages are counted in the call and added to grpc_server_msg_sent_total when it ends (a stream still open has not
been counted yet): one Counter.inc per call instead of one per message."""

from __future__ import annotations

import time
from functools import lru_cache

from prometheus_client import Counter, Histogram

from typecase.server.rpc.interceptors import WrappingInterceptor, call_status

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by code.", (*_LABELS, "grpc_code"))
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC, to its last message.",
    _LABELS,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
MSG_SENT = Counter("grpc_server_msg_sent_total", "Stream messages sent by the server.", _LABELS)


def split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


@lru_cache(maxsize=4096)  # per registered method and RPC type: unknown methods never reach an interceptor
def _children(rpc_type: str, method: str):
    labels = (rpc_type, *split_method(method))
    return labels, STARTED.labels(*labels), MSG_SENT.labels(*labels), HANDLING_SECONDS.labels(*labels)


@lru_cache(maxsize=4096)
def _handled(labels: tuple[str, ...], code: str):
    return HANDLED.labels(*labels, code)


class MetricsInterceptor(WrappingInterceptor):
    def around(self, details, context, rpc_type):
        labels, started, sent, seconds = _children(rpc_type, details.method)
        return _Measured(context, labels, started, sent, seconds, rpc_type)


class _Measured:
    """One call's metrics, as a plain async context manager (an @asynccontextmanager generator costs a few
    microseconds more on every call)."""

    __slots__ = ("context", "labels", "started", "sent", "seconds", "rpc_type", "start", "messages")

    def __init__(self, context, labels, started, sent, seconds, rpc_type):
        self.context = context
        self.labels = labels
        self.started = started
        self.sent = sent
        self.seconds = seconds
        self.rpc_type = rpc_type
        self.messages = 0

    async def __aenter__(self):
        self.started.inc()
        self.start = time.perf_counter()
        return self.count if self.rpc_type in ("server_stream", "bidi_stream") else None

    def count(self) -> None:
        # A plain int per message, added to the counter when the call ends: Counter.inc takes a lock and checks
        # its amount (~0.3 us against ~0.03, on every token of a stream).
        self.messages += 1

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if self.messages:
            self.sent.inc(self.messages)
        code = call_status(self.context, exc_type)
        _handled(self.labels, code.name).inc()
        self.seconds.observe(time.perf_counter() - self.start)
        return False
