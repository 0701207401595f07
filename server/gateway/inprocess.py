"""The in-process target: dispatch HTTP calls straight to servicers with a gRPC call's semantics.

``InProcess`` stands in for a ``grpc.aio.Server`` when generated ``add_FooServicer_to_server``
functions register servicers, so the composition root registers the same servicers, with the same
interceptor instances, on both. A call then goes:

1. ``HandlerCallDetails(method="/pkg.Service/Method", invocation_metadata=((key, value), ...))``
   (``-bin`` values are bytes) through each interceptor's ``intercept_service(continuation,
   details)``, first interceptor outermost, as grpc.aio does, to get the ``RpcMethodHandler``;
2. the handler's behaviour is called with the parsed request *message object* (no serialisation)
   and a ``grpc.aio.ServicerContext`` implementation (``ServicerContext`` below);
3. ``context.abort`` raises ``grpc.aio.AbortError`` and fixes the status; any other exception becomes
   UNKNOWN ``"Unexpected <class 'X'>: message"`` like grpc.aio; ``set_code``/``set_details`` on a
   normal return give that status; the deadline cancels the handler with DEADLINE_EXCEEDED;
   a client that goes away cancels it (``context.cancelled()`` is then true and done callbacks run).

The handler runs in the HTTP request's own task (no hop through a queue or another task), which is
what makes streaming cheap: each message a handler yields is serialised and written immediately.
Cancellation uses ``CallScope``: the deadline timer or the disconnect watcher cancels the request
task, and the call code tells that apart from an outside cancellation by the recorded reason.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from grpc.aio import AbortError, UsageError

from .errors import RpcFailure

log = logging.getLogger("typecase.gateway")

Metadata = tuple[tuple[str, str | bytes], ...]
Emit = Callable[[Any], Awaitable[None]]

_INSECURE_AUTH_CONTEXT = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "invocation_metadata")), grpc.HandlerCallDetails):
    """What grpc passes to ``intercept_service`` (same shape as grpc's own)."""


class CallScope:
    """Cancels the task running a call, remembering why (deadline or client gone)."""

    __slots__ = ("task", "reason", "armed", "timer", "deadline")

    def __init__(self, deadline: float | None = None) -> None:
        self.task = asyncio.current_task()
        self.reason: grpc.StatusCode | None = None
        self.armed = True
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = deadline  # time.monotonic() based, like time_remaining()

    def arm_deadline(self) -> None:
        if self.deadline is not None:
            loop = asyncio.get_running_loop()
            delay = self.deadline - time.monotonic()
            self.timer = loop.call_at(loop.time() + max(delay, 0.0), self.cancel, grpc.StatusCode.DEADLINE_EXCEEDED)

    def cancel(self, reason: grpc.StatusCode) -> None:
        if self.armed and self.reason is None and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def disarm(self) -> None:
        self.armed = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def absorb(self) -> grpc.StatusCode:
        """After catching our own CancelledError: undo the cancel request, return its reason."""
        assert self.reason is not None
        if self.task is not None and self.task.cancelling():
            self.task.uncancel()
        return self.reason


def failure_for_reason(reason: grpc.StatusCode) -> RpcFailure:
    if reason == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RpcFailure(reason, "Deadline Exceeded")
    return RpcFailure(reason, "Cancelled")


class ServicerContext(grpc.aio.ServicerContext):
    """grpc.aio.ServicerContext for an in-process call (behaves as the real one; see module doc)."""

    # Initial metadata is stored, never sent over a network: interceptors may send it at once (rpc/interceptors.py).
    initial_metadata_is_local = True

    __slots__ = (
        "_metadata",
        "_peer",
        "_scope",
        "_code",
        "_details",
        "_trailing",
        "_initial",
        "_initial_sent",
        "_aborted",
        "_done",
        "_cancelled",
        "_callbacks",
        "_emit",
        "_on_initial",
        "_requests",
        "_method",
    )

    def __init__(
        self,
        method: str,
        metadata: Metadata,
        peer: str,
        scope: CallScope,
        emit: Emit | None = None,
        on_initial_metadata: Callable[[Metadata], Awaitable[None]] | None = None,
        requests: AsyncIterator[Any] | None = None,
    ) -> None:
        self._method = method
        self._metadata = metadata
        self._peer = peer
        self._scope = scope
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._initial: Metadata = ()
        self._initial_sent = False
        self._aborted = False
        self._done = False
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] | None = None
        self._emit = emit
        self._on_initial = on_initial_metadata
        self._requests = requests

    # -- reading and writing -------------------------------------------------------------------
    async def read(self) -> Any:
        if self._requests is None:
            raise UsageError("read() is only for client-streaming calls")
        try:
            return await self._requests.__anext__()
        except StopAsyncIteration:
            return grpc.aio.EOF

    async def write(self, message: Any) -> None:
        if self._emit is None:
            raise UsageError("write() is only for server-streaming calls")
        if self._done:
            raise UsageError("write() after the call finished")
        await self._emit(message)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        if self._initial_sent:
            raise UsageError("Send initial metadata failed: already sent")
        self._initial = tuple(tuple(kv) for kv in initial_metadata)
        self._initial_sent = True
        if self._on_initial is not None:
            await self._on_initial(self._initial)

    # -- status ---------------------------------------------------------------------------------
    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self._abort(code, details, trailing_metadata)

    def _abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> NoReturn:
        if self._aborted:
            raise UsageError("Abort already called!")
        if code == grpc.StatusCode.OK:
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        self._aborted = True
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = tuple(tuple(kv) for kv in trailing_metadata)
        raise AbortError()

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self._abort(status.code, status.details, status.trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple(tuple(kv) for kv in trailing_metadata)

    def trailing_metadata(self) -> Metadata:  # type: ignore[override]  # tuples, as grpc.aio hands handlers
        return self._trailing

    def invocation_metadata(self) -> Metadata:  # type: ignore[override]  # tuples, as grpc.aio hands handlers
        return self._metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:  # type: ignore[override]  # None until set, as in grpc.aio
        return self._code

    def details(self) -> str:
        return self._details

    # -- connection -----------------------------------------------------------------------------
    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return dict(_INSECURE_AUTH_CONTEXT)

    def time_remaining(self) -> float | None:  # type: ignore[override]  # None without a deadline, as in grpc.aio
        if self._scope.deadline is None:
            return None
        return max(self._scope.deadline - time.monotonic(), 0.0)

    def set_compression(self, compression: grpc.Compression) -> None:
        pass  # nothing is compressed in process

    def disable_next_message_compression(self) -> None:
        pass

    # -- lifecycle ------------------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self._cancelled or self._scope.reason is not None

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._done:
            callback(self)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def _finish(self, cancelled: bool = False) -> None:
        if cancelled:
            self._cancelled = True
        self._done = True
        callbacks, self._callbacks = self._callbacks, None
        for cb in callbacks or ():
            try:
                cb(self)
            except Exception:
                log.exception("done callback of %s failed", self._method)

    def _failure(self) -> RpcFailure:
        code = self._code if self._code is not None else grpc.StatusCode.UNKNOWN
        return RpcFailure(code, self._details, self._trailing, self._initial)


class _SyncContext:
    """What a plain (non-async) handler gets: the same context with blocking-safe methods."""

    def __init__(self, ctx: ServicerContext) -> None:
        self._ctx = ctx

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self._ctx._abort(code, details, trailing_metadata)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self._ctx._abort(status.code, status.details, status.trailing_metadata)

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        if self._ctx._initial_sent:
            raise UsageError("Send initial metadata failed: already sent")
        self._ctx._initial = tuple(tuple(kv) for kv in initial_metadata)

    def is_active(self) -> bool:
        return not self._ctx._done and not self._ctx._cancelled

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _unexpected(exc: BaseException) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


class InProcess:
    """A gRPC server stand-in that the gateway calls directly (see module docstring)."""

    def __init__(self, interceptors: Sequence[grpc.aio.ServerInterceptor] = (), executor: Any = None) -> None:
        self._interceptors = tuple(interceptors)
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._executor = executor  # for plain (non-async) handlers; None = the loop's default
        self._chain = self._build_chain()

    # -- the grpc.aio.Server registration surface ---------------------------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in method_handlers.items():
            self._registered[f"/{service_name}/{name}"] = handler

    @property
    def interceptors(self) -> tuple[grpc.aio.ServerInterceptor, ...]:
        return self._interceptors

    # -- handler lookup through the interceptors -----------------------------------------------
    def _lookup(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._registered.get(details.method)
        if handler is not None:
            return handler
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    def _build_chain(self) -> Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]:
        async def lookup(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return self._lookup(details)

        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]] = lookup
        for interceptor in reversed(self._interceptors):
            continuation = functools.partial(interceptor.intercept_service, continuation)
        return continuation

    async def find_handler(self, method: str, metadata: Metadata) -> grpc.RpcMethodHandler | None:
        details = _CallDetails(method, metadata)
        if not self._interceptors:
            return self._lookup(details)
        return await self._chain(details)

    # -- calls -------------------------------------------------------------------------------------
    async def _run_plain(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def unary(
        self,
        method: str,
        request: Any,
        metadata: Metadata,
        peer: str,
        scope: CallScope,
        requests: AsyncIterator[Any] | None = None,
    ) -> tuple[Any, Metadata, Metadata]:
        """Run a unary-response call; returns (response, initial md, trailing md) or raises RpcFailure."""
        ctx = ServicerContext(method, metadata, peer, scope, requests=requests)
        scope.arm_deadline()
        cancelled = False
        try:
            handler: Any = await self.find_handler(method, metadata)  # grpc-stubs type handlers as sync callables
            if handler is None:
                raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            if handler.request_streaming and handler.response_streaming:
                raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "bidirectional streaming is not served over HTTP")
            if handler.response_streaming:
                raise RpcFailure(grpc.StatusCode.INTERNAL, "handler streams responses for a unary method")
            if handler.request_streaming:
                behavior = handler.stream_unary
                arg = requests if requests is not None else _single(request)
                ctx._requests = arg
            else:
                behavior = handler.unary_unary
                arg = request
            if inspect.iscoroutinefunction(behavior):
                response = await behavior(arg, ctx)
            else:
                response = await self._run_plain(behavior, arg, _SyncContext(ctx))
        except AbortError:
            raise ctx._failure() from None
        except RpcFailure:
            raise
        except asyncio.CancelledError:
            if scope.reason is None:
                cancelled = True
                raise
            cancelled = True
            raise failure_for_reason(scope.absorb()) from None
        except Exception as exc:
            log.exception("unexpected error in %s", method)
            if ctx._aborted:  # grpc.aio keeps the status of an earlier abort()
                raise ctx._failure() from None
            raise _unexpected(exc) from None
        finally:
            scope.disarm()
            ctx._finish(cancelled)
        if ctx._code is not None and ctx._code != grpc.StatusCode.OK:
            raise ctx._failure()
        if response is None:
            raise RpcFailure(
                grpc.StatusCode.UNKNOWN,
                "Unexpected <class 'TypeError'>: the handler returned None instead of a response message",
                ctx._trailing,
            )
        return response, ctx._initial, ctx._trailing

    async def server_stream(
        self,
        method: str,
        request: Any,
        metadata: Metadata,
        peer: str,
        scope: CallScope,
        emit: Emit,
        on_initial_metadata: Callable[[Metadata], Awaitable[None]],
    ) -> ServicerContext:
        """Run a server-streaming call, awaiting ``emit(message)`` for each response message.

        Before the first ``emit`` the context's initial metadata is final (``initial_metadata``
        of the returned context). Raises RpcFailure; returns the context on success.
        """
        ctx = ServicerContext(method, metadata, peer, scope, on_initial_metadata=on_initial_metadata)

        async def emit_first(message: Any) -> None:
            # The first message carries the initial metadata unless it was sent explicitly.
            ctx._emit = emit
            if not ctx._initial_sent:
                ctx._initial_sent = True
                await on_initial_metadata(ctx._initial)
            await emit(message)

        ctx._emit = emit_first
        scope.arm_deadline()
        cancelled = False
        agen: Any = None
        try:
            handler: Any = await self.find_handler(method, metadata)  # grpc-stubs type handlers as sync callables
            if handler is None:
                raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            if handler.request_streaming:
                raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "bidirectional streaming is not served over HTTP")
            if not handler.response_streaming:
                # e.g. an interceptor that rejects with a unary "terminator" handler
                behavior = handler.unary_unary
                if inspect.iscoroutinefunction(behavior):
                    response = await behavior(request, ctx)
                else:
                    response = await self._run_plain(behavior, request, _SyncContext(ctx))
                if response is not None and (ctx._code is None or ctx._code == grpc.StatusCode.OK):
                    await ctx._emit(response)
            else:
                behavior = handler.unary_stream
                result = behavior(request, ctx) if not _is_plain(behavior) else None
                if result is None:
                    await self._run_plain_stream(behavior, request, ctx)
                elif hasattr(result, "__anext__"):
                    agen = result
                    async for message in agen:
                        await ctx._emit(message)
                        if ctx._code is not None and ctx._code != grpc.StatusCode.OK:
                            break
                    await agen.aclose()
                    agen = None
                else:
                    await result  # a handler that writes with context.write()
        except AbortError:
            raise ctx._failure() from None
        except RpcFailure:
            raise
        except asyncio.CancelledError:
            cancelled = True
            if scope.reason is None:
                raise
            reason = scope.absorb()
            if agen is not None:
                await _throw_cancel(agen)
                agen = None
            raise failure_for_reason(reason) from None
        except Exception as exc:
            log.exception("unexpected error in %s", method)
            if ctx._aborted:  # grpc.aio keeps the status of an earlier abort()
                raise ctx._failure() from None
            raise _unexpected(exc) from None
        finally:
            scope.disarm()
            if agen is not None:
                await agen.aclose()
            ctx._finish(cancelled)
        if ctx._code is not None and ctx._code != grpc.StatusCode.OK:
            raise ctx._failure()
        if not ctx._initial_sent:  # an empty stream: headers go out now
            ctx._initial_sent = True
            await on_initial_metadata(ctx._initial)
        return ctx

    async def _run_plain_stream(self, behavior: Callable[..., Any], request: Any, ctx: ServicerContext) -> None:
        iterator = await self._run_plain(lambda: iter(behavior(request, _SyncContext(ctx))))
        done = object()
        assert ctx._emit is not None  # set by the streaming caller
        while True:
            message = await self._run_plain(next, iterator, done)
            if message is done:
                return
            await ctx._emit(message)


def _is_plain(fn: Callable[..., Any]) -> bool:
    return not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))


async def _single(message: Any) -> AsyncIterator[Any]:
    yield message


async def _throw_cancel(agen: Any) -> None:
    """Deliver the cancellation into a generator paused at ``yield`` (so the handler sees it)."""
    try:
        await agen.athrow(asyncio.CancelledError())
    except (asyncio.CancelledError, StopAsyncIteration, GeneratorExit):
        pass
    except Exception:
        log.debug("stream handler raised while being cancelled", exc_info=True)
    finally:
        try:
            await agen.aclose()
        except BaseException:  # noqa: BLE001 - the call is already over
            pass
