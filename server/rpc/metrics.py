"""Prometheus metrics for every RPC, with the names and labels of go-grpc-prometheus so dashboards carry over.

The labelled children of a method are looked up once and kept (prometheus_client's `labels()` validates and locks
on every call; children are never removed here), a few microseconds less on every call's path."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from functools import lru_cache

import grpc
from prometheus_client import Counter, Histogram

from typecase.server.rpc.interceptors import WrappingInterceptor

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
    @asynccontextmanager
    async def around(self, details, context, rpc_type):
        labels, started, sent, seconds = _children(rpc_type, details.method)
        started.inc()
        on_message = sent.inc if rpc_type in ("server_stream", "bidi_stream") else None
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield on_message
            code = context.code() or grpc.StatusCode.OK
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            _handled(labels, code.name).inc()
            seconds.observe(time.perf_counter() - start)
