"""The remote target: the gateway in front of any gRPC server, through a ``grpc.aio.Channel``.

Multicallables are made once per method from the descriptors' message classes (no stubs needed).
The call deadline travels as the gRPC timeout; cancelling the HTTP request task (client gone)
cancels the RPC. Failures become RpcFailure with the call's trailing metadata, so rich error
details (``grpc-status-details-bin``) reach the HTTP body the same way as in process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .errors import RpcFailure
from .inprocess import CallScope, failure_for_reason

Metadata = tuple[tuple[str, str | bytes], ...]


def _failure(e: grpc.aio.AioRpcError) -> RpcFailure:
    return RpcFailure(
        e.code(), e.details() or "", tuple(e.trailing_metadata() or ()), tuple(e.initial_metadata() or ())
    )


def _timeout(scope: CallScope) -> float | None:
    return None if scope.deadline is None else max(scope.deadline - time.monotonic(), 0.0)


class _RequestPump:
    """Wraps the HTTP request-body iterator so a body error (400/413) wins over the CANCELLED it causes."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self.source = source
        self.error: BaseException | None = None
        self.call: Any = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for message in self.source:
                yield message
        except Exception as e:  # noqa: BLE001 - re-raised by the caller after the call ends
            self.error = e
            if self.call is not None:
                self.call.cancel()


class ChannelTarget:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._callables: dict[str, Any] = {}

    def prepare(
        self, method: str, request_cls: Any, response_cls: Any, client_streaming: bool, server_streaming: bool
    ) -> None:
        kind = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, False): self.channel.stream_unary,
            (True, True): self.channel.stream_stream,
        }[(client_streaming, server_streaming)]
        self._callables[method] = kind(
            method,
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
            _registered_method=True,  # type: ignore[call-arg]  # grpcio has it, grpc-stubs not yet
        )

    async def unary(
        self,
        method: str,
        request: Any,
        metadata: Metadata,
        peer: str,
        scope: CallScope,
        requests: AsyncIterator[Any] | None = None,
    ) -> tuple[Any, Metadata, Metadata]:
        pump = _RequestPump(requests) if requests is not None else None
        call = self._callables[method](
            pump.__aiter__() if pump else request, metadata=metadata, timeout=_timeout(scope)
        )
        if pump is not None:
            pump.call = call
        try:
            response = await call
            initial = await call.initial_metadata()
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as e:
            if pump is not None and pump.error is not None:
                raise pump.error from None
            raise _failure(e) from None
        except asyncio.CancelledError:
            call.cancel()
            if pump is not None and pump.error is not None and scope.reason is None:
                raise pump.error from None  # the body reader cancelled the call (grpc raises CancelledError)
            if scope.reason is None:
                raise
            raise failure_for_reason(scope.absorb()) from None
        finally:
            scope.disarm()
        return response, tuple(initial or ()), tuple(trailing or ())

    async def server_stream(
        self,
        method: str,
        request: Any,
        metadata: Metadata,
        peer: str,
        scope: CallScope,
        emit: Callable[[Any], Awaitable[None]],
        on_initial_metadata: Callable[[Metadata], Awaitable[None]],
    ) -> None:
        call = self._callables[method](request, metadata=metadata, timeout=_timeout(scope))
        first = True
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                if first:
                    first = False
                    await on_initial_metadata(tuple(await call.initial_metadata() or ()))
                await emit(message)
            code = await call.code()
            if code != grpc.StatusCode.OK:
                raise RpcFailure(code, await call.details() or "", tuple(await call.trailing_metadata() or ()))
            if first:
                await on_initial_metadata(tuple(await call.initial_metadata() or ()))
        except grpc.aio.AioRpcError as e:
            raise _failure(e) from None
        except asyncio.CancelledError:
            call.cancel()
            if scope.reason is None:
                raise
            raise failure_for_reason(scope.absorb()) from None
        finally:
            scope.disarm()
