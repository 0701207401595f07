# GENERATED from _async/resource.py by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`.
"""The base of the per-service helpers: unary calls, pages and server streams with the client's error mapping."""

from __future__ import annotations

from collections.abc import Iterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import message as _message

from typecase.client.errors import from_rpc_error

if TYPE_CHECKING:
    from typecase.client._sync.client import Client

R = TypeVar("R", bound=_message.Message)


class Resource:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _unary(self, method: Callable[..., Any], request: _message.Message, response_type: type[R],
               timeout: float | None) -> R:
        response = self._client.call(method, request, timeout=timeout)
        if not isinstance(response, response_type):
            raise TypeError(f"expected {response_type.__name__}, got {type(response).__name__}")
        return response

    def _pages(self, method: Callable[..., Any], request: Any, field: str,
               timeout: float | None) -> Iterator[Any]:
        while True:
            page = self._client.call(method, request, timeout=timeout)
            for item in getattr(page, field):
                yield item
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def _stream(self, call: Any) -> Iterator[Any]:
        try:
            for message in call:
                yield message
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()
