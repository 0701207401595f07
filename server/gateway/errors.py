"""gRPC status <-> HTTP: the status table, google.rpc.Status JSON bodies and rich error details.

The table is grpc-gateway's ``HTTPStatusFromCode`` (with CANCELLED as 499, "client closed request",
as in grpc-gateway v1 and Envoy). A failed call carries ``grpc-status-details-bin`` in its trailing
metadata when the server used rich errors (``google.rpc.Status`` with ``details``); those details
are returned in the body as Any JSON (``{"@type": ..., ...}``). Importing
``google.rpc.error_details_pb2`` registers the standard detail types (ErrorInfo, BadRequest, ...).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import (
    error_details_pb2,  # noqa: F401 - registers the detail types for Any JSON
    status_pb2,
)

from .jsonmap import to_json

Metadata = tuple[tuple[str, str | bytes], ...]

STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: dict[int, int] = {
    0: 200,  # OK
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION (deliberately not 412, as grpc-gateway)
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}

CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def http_status(code: grpc.StatusCode | int) -> int:
    n = code if isinstance(code, int) else code.value[0]
    return HTTP_STATUS.get(n, 500)


class RpcFailure(Exception):
    """A call that ended with a non-OK status, from either target, or a gateway-side rejection."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str = "",
        trailing_metadata: Metadata = (),
        initial_metadata: Metadata = (),
        details: list[AnyProto] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing_metadata = trailing_metadata
        self.initial_metadata = initial_metadata
        self._details = details
        self.http_status_override = http_status

    @property
    def http_status(self) -> int:
        return self.http_status_override or http_status(self.code)

    @property
    def details(self) -> list[AnyProto]:
        """Rich details from ``grpc-status-details-bin`` (empty when absent or unreadable)."""
        if self._details is None:
            self._details = []
            for key, value in self.trailing_metadata:
                if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                    try:
                        self._details = list(status_pb2.Status.FromString(value).details)
                    except Exception:  # a broken details blob must not turn into a 500
                        self._details = []
        return self._details

    def detail(self, kind):
        """The first rich detail of a message type (e.g. error_details_pb2.ErrorInfo), or None."""
        for detail in self.details:
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                return message
        return None

    def __repr__(self) -> str:
        return f"RpcFailure({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, message)


def _any_json(detail: AnyProto) -> dict[str, Any]:
    try:
        return to_json(detail)
    except (TypeError, ValueError):
        # The detail's type is not registered here: keep it, with its payload as base64.
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode("ascii")}


def status_dict(failure: RpcFailure) -> dict[str, Any]:
    """The google.rpc.Status JSON object for a failure."""
    return {
        "code": failure.code.value[0],
        "message": failure.message,
        "details": [_any_json(d) for d in failure.details],
    }


def status_body(failure: RpcFailure) -> bytes:
    return json.dumps(status_dict(failure), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def from_status_proto(status: status_pb2.Status) -> RpcFailure:
    code = CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return RpcFailure(code, status.message, details=list(status.details))
