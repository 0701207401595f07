"""What app.py's interceptor chain costs per streamed call: trace, metrics, traffic, errors and auth (a fixed
principal: no credential lookup) around a one-message server stream, through WrappingChain.intercept_service, with
an in-process context (initial metadata stored, no I/O). Prints microseconds per call (median of 7 rounds).

Compare trees by running it under each, interleaved (bench/chat/cpu_per_turn.baseline_tree makes an older one):
    PYTHONPATH=<baseline dir> .venv/bin/python bench/rpc/interceptor_chain.py
    .venv/bin/python bench/rpc/interceptor_chain.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc

from typecase.server.auth.interceptor import AuthInterceptor
from typecase.server.proxy.stats import RequestStats
from typecase.server.rpc.errors import ErrorInterceptor
from typecase.server.rpc.interceptors import WrappingChain
from typecase.server.rpc.metrics import MetricsInterceptor
from typecase.server.rpc.principal import Principal
from typecase.server.rpc.trace import TraceInterceptor
from typecase.server.traffic import TrafficInterceptor

CALLS = 5000


class Context:
    initial_metadata_is_local = True

    async def send_initial_metadata(self, metadata) -> None:
        pass

    def code(self) -> None:
        return None


class Details:
    method = "/typecase.v1.LLMService/Generate"
    invocation_metadata = (("authorization", "Bearer x"),)


async def one_message(request, context):
    yield 1


async def main() -> None:
    handler = grpc.unary_stream_rpc_method_handler(one_message)
    chain = WrappingChain(
        [
            TraceInterceptor(),
            MetricsInterceptor(),
            TrafficInterceptor(RequestStats()),
            ErrorInterceptor(),
            AuthInterceptor(None, None, Principal("user", 2)),  # type: ignore[arg-type]
        ],
        check_request=lambda request, streaming: request,
    )

    async def continuation(details):
        return handler

    context, details = Context(), Details()
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(CALLS):
            wrapped = await chain.intercept_service(continuation, details)
            async for _message in wrapped.unary_stream(None, context):
                pass
        rounds.append((time.perf_counter() - start) / CALLS * 1e6)
    print(f"interceptor chain: {statistics.median(rounds):.1f} us per streamed call")


if __name__ == "__main__":
    asyncio.run(main())
