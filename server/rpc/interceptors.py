"""A base for interceptors that wrap each call's behaviour in an async context manager.

grpc.aio interceptors only see the method handler; to act around the call itself (set a trace id, time it, map
its errors) they must return a handler whose behaviour wraps the original. This module does that once for the four
RPC kinds and for both server-streaming styles (async generators and `context.write`).

`WrappingChain` runs several of them as one interceptor: one wrapped handler per call and one generator layer per
streamed message instead of one each (the five of app.py: handler lookup 28 -> 20 us per call, four generator
hops less per message); the order and the exception flow are those of the list. It enters and exits the arounds
in a loop rather than through an AsyncExitStack, and the handler's shape (RPC type, behaviour) is found once per
method; app.py's arounds are plain async context manager classes rather than @asynccontextmanager generators.

`send_initial_metadata` sends an interceptor's initial metadata (the trace id) off the call's path on grpc.aio:
awaited there, it is a batch of its own through grpc's core and completion-queue thread, ~0.1-0.3 ms before the
handler even starts, on the time to first token of every stream. It starts as a task instead, which runs while
the handler waits on its first await (the upstream, for an LLM stream), and the wrapped handler waits for it
before anything else is sent on the call: its first message, its response, its error (ErrorInterceptor) or the
end of the call. The gateway's in-process context stores metadata without I/O: it is sent at once there.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

# around(details, context, rpc_type) -> async context manager yielding an optional per-message callback.
Around = Callable[[grpc.HandlerCallDetails, grpc.aio.ServicerContext, str], AbstractAsyncContextManager[Any]]


# The call's initial metadata still being sent (see the module docstring), per call: each runs in its own task.
_sending: contextvars.ContextVar[asyncio.Future[None] | None] = contextvars.ContextVar(
    "initial_metadata_sending", default=None
)


async def send_initial_metadata(context: grpc.aio.ServicerContext, metadata: tuple[tuple[str, str], ...]) -> None:
    """Send `metadata` as the call's initial metadata before its first message, response or error."""
    if getattr(context, "initial_metadata_is_local", False):  # the gateway's in-process context: no I/O
        await context.send_initial_metadata(metadata)
        return
    _sending.set(asyncio.ensure_future(context.send_initial_metadata(metadata)))


async def initial_metadata_sent() -> None:
    """Wait until the initial metadata `send_initial_metadata` started is out (now, if nothing is pending); every
    later send on the call must come after it, or grpc would send initial metadata twice."""
    sending = _sending.get()
    if sending is not None:
        _sending.set(None)
        try:
            await sending
        except Exception:  # noqa: BLE001 - the handler sent its own first (UsageError), or the call is over: the
            pass  # next send on the call reports that, as it did when the metadata went out first


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


# check(request_or_iterator, request_streaming) -> the request or request iterator to call the handler with.
RequestCheck = Callable[[Any, bool], Any]


class WrappingChain(grpc.aio.ServerInterceptor):
    """`members` as one interceptor, the first outermost, as grpc.aio would nest them as separate interceptors.
    `check_request`, when given, is applied to the request inside all of them, where an interceptor of its own
    placed after the chain would act (rpc/nul_text.py), without that interceptor's handler and generator layers."""

    def __init__(self, members: Sequence[WrappingInterceptor], check_request: RequestCheck | None = None):
        self.members = tuple(members)
        self._arounds = tuple(m.around for m in self.members)
        self._check = check_request

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if self._check is not None:
            return _wrap_chain(handler, handler_call_details, self._arounds, self._check)
        return wrap_handler(handler, handler_call_details, *self._arounds)


def call_status(context: grpc.aio.ServicerContext, exc_type: type[BaseException] | None) -> grpc.StatusCode:
    """The status a call ends with, seen from an around's exit: what escaped it (None: nothing) and the status the
    handler or ErrorInterceptor set on `context`."""
    if exc_type is None:
        return context.code() or grpc.StatusCode.OK
    if issubclass(exc_type, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if issubclass(exc_type, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def rpc_type_of(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def wrap_handler(handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails, *arounds: Around):
    """The handler with its behaviour inside `arounds` (the first outermost)."""
    if len(arounds) > 1:
        return _wrap_chain(handler, details, arounds)
    around = arounds[0]
    rpc_type = rpc_type_of(handler)
    # Any: grpc.aio handlers are coroutines or async generators, typed by grpc-stubs as the sync kinds.
    behavior: Any = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    wrapped: Callable[..., Any]
    if handler.response_streaming and inspect.isasyncgenfunction(behavior):

        async def wrapped(request_or_iterator, context) -> AsyncIterator[Any]:
            async with around(details, context, rpc_type) as on_message:
                first = True
                async for message in behavior(request_or_iterator, context):
                    if first:
                        first = False
                        await initial_metadata_sent()
                    if on_message is not None:
                        on_message()
                    yield message
                await initial_metadata_sent()

    else:

        async def wrapped(request_or_iterator, context):
            async with around(details, context, rpc_type):
                if handler.response_streaming:  # context.write() style: its writes send on the call directly
                    await initial_metadata_sent()
                response = await behavior(request_or_iterator, context)
                await initial_metadata_sent()
                return response

    return _handler(handler, rpc_type, wrapped)


async def _unwind(entered: list[AbstractAsyncContextManager[Any]], exc: BaseException | None) -> BaseException | None:
    """Exit `entered` innermost first as nested `async with` blocks would, `exc` escaping the body (None: none);
    the exception that escapes them all (None: none, or suppressed)."""
    for cm in reversed(entered):
        try:
            if exc is None:
                await cm.__aexit__(None, None, None)
            elif await cm.__aexit__(type(exc), exc, exc.__traceback__):
                exc = None
        except BaseException as raised:  # noqa: BLE001 - it replaces `exc` for the outer ones, as nesting does
            exc = raised
    return exc


def _wrap_chain(
    handler: grpc.RpcMethodHandler,
    details: grpc.HandlerCallDetails,
    arounds: Sequence[Around],
    check: RequestCheck | None = None,
):
    """The handler inside `arounds`, entered and exited in a loop: the nesting of one `async with` each, without
    an AsyncExitStack's per-call bookkeeping (a callback object per member, its exception-context repair)."""
    rpc_type, streaming_request, behavior, asyncgen = _shape(handler)
    wrapped: Callable[..., Any]

    if asyncgen:

        async def wrapped(request_or_iterator, context) -> AsyncIterator[Any]:
            entered: list[AbstractAsyncContextManager[Any]] = []
            callbacks: list[Callable[[], None]] = []
            try:
                for around in arounds:
                    cm = around(details, context, rpc_type)
                    on_message = await cm.__aenter__()
                    entered.append(cm)
                    if on_message is not None:
                        callbacks.append(on_message)
                if check is not None:
                    request_or_iterator = check(request_or_iterator, streaming_request)
                first = True
                async for message in behavior(request_or_iterator, context):
                    if first:
                        first = False
                        await initial_metadata_sent()
                    for on_message in callbacks:
                        on_message()
                    yield message
                await initial_metadata_sent()
            except BaseException as exc:
                escaped = await _unwind(entered, exc)
                if escaped is exc:
                    raise
                if escaped is not None:
                    raise escaped  # noqa: B904 - its context is already the body's exception, as nesting makes it
                return
            escaped = await _unwind(entered, None)
            if escaped is not None:
                raise escaped

    else:
        write_style = handler.response_streaming  # context.write() style: its writes send on the call directly

        async def wrapped(request_or_iterator, context):
            entered: list[AbstractAsyncContextManager[Any]] = []
            try:
                for around in arounds:
                    cm = around(details, context, rpc_type)
                    await cm.__aenter__()
                    entered.append(cm)
                if check is not None:
                    request_or_iterator = check(request_or_iterator, streaming_request)
                if write_style:
                    await initial_metadata_sent()
                response = await behavior(request_or_iterator, context)
                await initial_metadata_sent()
            except BaseException as exc:
                escaped = await _unwind(entered, exc)
                if escaped is exc:
                    raise
                if escaped is not None:
                    raise escaped  # noqa: B904 - as above
                return None
            escaped = await _unwind(entered, None)
            if escaped is not None:
                raise escaped
            return response

    return _handler(handler, rpc_type, wrapped)


# Per registered handler (grpc looks up the same RpcMethodHandler object for every call of a method): its RPC type,
# whether it streams requests, its behaviour and whether that is an async generator, found once.
_SHAPES: dict[int, tuple[grpc.RpcMethodHandler, tuple[str, bool, Any, bool]]] = {}


def _shape(handler: grpc.RpcMethodHandler) -> tuple[str, bool, Any, bool]:
    hit = _SHAPES.get(id(handler))
    if hit is not None and hit[0] is handler:  # ids are reused once objects are freed
        return hit[1]
    # Any: grpc.aio handlers are coroutines or async generators, typed by grpc-stubs as the sync kinds.
    behavior: Any = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    shape = (
        rpc_type_of(handler),
        bool(handler.request_streaming),
        behavior,
        bool(handler.response_streaming) and inspect.isasyncgenfunction(behavior),
    )
    if len(_SHAPES) >= 4096:
        _SHAPES.clear()
    _SHAPES[id(handler)] = (handler, shape)
    return shape


_MAKERS = {
    "unary": grpc.unary_unary_rpc_method_handler,
    "server_stream": grpc.unary_stream_rpc_method_handler,
    "client_stream": grpc.stream_unary_rpc_method_handler,
    "bidi_stream": grpc.stream_stream_rpc_method_handler,
}


def _handler(handler: grpc.RpcMethodHandler, rpc_type: str, wrapped: Callable[..., Any]):
    return _MAKERS[rpc_type](
        wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
