"""The base of the per-service helpers: unary calls, pages and server streams with the client's error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import message as _message

from typecase.client.errors import from_rpc_error

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient

R = TypeVar("R", bound=_message.Message)


class AsyncResource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def _unary(self, method: Callable[..., Any], request: _message.Message, response_type: type[R],
                     timeout: float | None) -> R:
        response = await self._client.call(method, request, timeout=timeout)
        if not isinstance(response, response_type):
            raise TypeError(f"expected {response_type.__name__}, got {type(response).__name__}")
        return response

    async def _pages(self, method: Callable[..., Any], request: Any, field: str,
                     timeout: float | None) -> AsyncIterator[Any]:
        while True:
            page = await self._client.call(method, request, timeout=timeout)
            for item in getattr(page, field):
                yield item
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def _stream(self, call: Any) -> AsyncIterator[Any]:
        try:
            async for message in call:
                yield message
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()
