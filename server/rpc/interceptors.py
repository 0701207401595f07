"""A base for interceptors that wrap each call's behaviour in an async context manager.

grpc.aio interceptors only see the method handler; to act around the call itself (set a trace id, time it, map
its errors) they must return a handler whose behaviour wraps the original. This module does that once for the four
RPC kinds and for both server-streaming styles (async generators and `context.write`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

# around(details, context, rpc_type) -> async context manager yielding an optional per-message callback.
Around = Callable[[grpc.HandlerCallDetails, grpc.aio.ServicerContext, str], AbstractAsyncContextManager[Any]]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext, rpc_type: str
    ) -> AbstractAsyncContextManager[Callable[[], None] | None]:
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, handler_call_details, self.around)


def rpc_type_of(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def wrap_handler(handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails, around: Around):
    rpc_type = rpc_type_of(handler)
    # Any: grpc.aio handlers are coroutines or async generators, typed by grpc-stubs as the sync kinds.
    behavior: Any = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    wrapped: Callable[..., Any]
    if handler.response_streaming and inspect.isasyncgenfunction(behavior):

        async def wrapped(request_or_iterator, context) -> AsyncIterator[Any]:
            async with around(details, context, rpc_type) as on_message:
                async for message in behavior(request_or_iterator, context):
                    if on_message is not None:
                        on_message()
                    yield message

    else:

        async def wrapped(request_or_iterator, context):
            async with around(details, context, rpc_type):
                return await behavior(request_or_iterator, context)

    make = {
        "unary": grpc.unary_unary_rpc_method_handler,
        "server_stream": grpc.unary_stream_rpc_method_handler,
        "client_stream": grpc.stream_unary_rpc_method_handler,
        "bidi_stream": grpc.stream_stream_rpc_method_handler,
    }[rpc_type]
    return make(
        wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
