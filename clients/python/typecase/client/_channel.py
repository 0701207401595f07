"""Channels with the client's credentials and default deadline applied to every call, raw stubs included, and the
two transports (`AsyncTransport` for AsyncClient, `Transport` for Client) that own them: the only part of a client
whose code differs between asyncio and blocking (waiting for the connection, closing), so that the clients
themselves are written once (see _async/__init__.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from typecase.client._config import Settings

Metadata = tuple[tuple[str, str | bytes], ...]


class Credentials:
    """The bearer credential (API key or access token) sent as `authorization`; replaceable at any time."""

    def __init__(self, credential: str | None, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.credential = credential
        self.extra = tuple(extra)

    def metadata(self, given: Any) -> Metadata:
        """The call's metadata with `authorization` (unless the call set its own) and the client's extras."""
        pairs: list[tuple[str, str | bytes]] = [(str(k), v) for k, v in (given or ())]
        present = {key for key, _ in pairs}
        if self.credential and "authorization" not in present:
            pairs.append(("authorization", f"Bearer {self.credential}"))
        pairs.extend(item for item in self.extra if item[0] not in present)
        return tuple(pairs)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Metadata,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _SyncInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, credentials: Credentials, timeout: float | None, stream_timeout: float | None) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._stream_timeout = stream_timeout

    def _details(self, details: grpc.ClientCallDetails, streaming: bool) -> _CallDetails:
        default = self._stream_timeout if streaming else self._timeout
        return _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else default,
            self._credentials.metadata(details.metadata),
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._details(client_call_details, False), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._details(client_call_details, True), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details, True), request_iterator)

    def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                                request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details, True), request_iterator)


def sync_channel(settings: Settings, credentials: Credentials) -> tuple[grpc.Channel, grpc.Channel]:
    """(the intercepted channel to build stubs on, the underlying channel to close)."""
    options = list(settings.options)
    if settings.channel_credentials is not None:
        base = grpc.secure_channel(settings.target, settings.channel_credentials, options=options)
    else:
        base = grpc.insecure_channel(settings.target, options=options)
    interceptor = _SyncInterceptor(credentials, settings.timeout, settings.stream_timeout)
    return grpc.intercept_channel(base, interceptor), base


def _aio_details(details: grpc.aio.ClientCallDetails, credentials: Credentials,
                 default_timeout: float | None) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout if details.timeout is not None else default_timeout,
        grpc.aio.Metadata(*credentials.metadata(details.metadata)),
        details.credentials,
        details.wait_for_ready,
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, credentials: Credentials, timeout: float | None) -> None:
        self._credentials, self._timeout = credentials, timeout

    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._credentials, self._timeout), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, credentials: Credentials, timeout: float | None) -> None:
        self._credentials, self._timeout = credentials, timeout

    async def intercept_unary_stream(self, continuation: Callable[..., Any],
                                     client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._credentials, self._timeout), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, credentials: Credentials, timeout: float | None) -> None:
        self._credentials, self._timeout = credentials, timeout

    async def intercept_stream_unary(self, continuation: Callable[..., Any],
                                     client_call_details: grpc.aio.ClientCallDetails, request_iterator: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._credentials, self._timeout),
                                  request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, credentials: Credentials, timeout: float | None) -> None:
        self._credentials, self._timeout = credentials, timeout

    async def intercept_stream_stream(self, continuation: Callable[..., Any],
                                      client_call_details: grpc.aio.ClientCallDetails, request_iterator: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._credentials, self._timeout),
                                  request_iterator)


def aio_channel(settings: Settings, credentials: Credentials) -> grpc.aio.Channel:
    interceptors: list[grpc.aio.ClientInterceptor] = [
        _AioUnaryUnary(credentials, settings.timeout),
        _AioUnaryStream(credentials, settings.stream_timeout),
        _AioStreamUnary(credentials, settings.stream_timeout),
        _AioStreamStream(credentials, settings.stream_timeout),
    ]
    options = list(settings.options)
    if settings.channel_credentials is not None:
        return grpc.aio.secure_channel(settings.target, settings.channel_credentials, options=options,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(settings.target, options=options, interceptors=interceptors)


class AsyncTransport:
    """The grpc.aio channel of an AsyncClient; stubs are built on `channel`."""

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.channel: grpc.aio.Channel = aio_channel(settings, credentials)

    async def wait_until_ready(self, timeout: float | None) -> bool:
        """True once the channel is connected, False after `timeout` seconds."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, grace: float | None) -> None:
        await self.channel.close(grace)


class Transport:
    """The blocking channel of a Client: stubs are built on `channel` (with the interceptor), the channel under it
    is the one to watch and close."""

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.channel, self._base = sync_channel(settings, credentials)

    def wait_until_ready(self, timeout: float | None) -> bool:
        """True once the channel is connected, False after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._base).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def close(self, grace: float | None) -> None:
        if grace is not None:  # refused rather than ignored: the caller would wait for calls that are cut off
            raise ValueError("grace is for AsyncClient: grpcio's blocking channel cancels calls in progress at once")
        self._base.close()
