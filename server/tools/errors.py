"""The tools domain's errors, one constructor per reason (reasons are listed in common.proto's ErrorReason)."""

from __future__ import annotations

import grpc

from typecase.server.rpc.errors import TypecaseError

MAX_UPSTREAM_MESSAGE = 2000  # characters of an upstream's message quoted back


class ToolFailure(Exception):
    """A kind's call failed upstream. `unreachable`: the server or service could not be reached at all."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable


def tool_not_found(tool_id: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.NOT_FOUND, "TOOL_NOT_FOUND", f"tool {tool_id!r} not found", {"id": tool_id})


def arguments_invalid(tool: str, where: str, problem: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "TOOL_ARGUMENTS_INVALID",
        f"arguments of tool {tool!r} at {where}: {problem}",
        {"field": where, "tool": tool},
    )


def tool_timeout(tool: str, seconds: float) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "TOOL_TIMEOUT",
        f"tool {tool!r} did not answer within {seconds:g}s",
        {"tool": tool},
    )


def tool_failed(tool: str, failure: ToolFailure) -> TypecaseError:
    code = grpc.StatusCode.UNAVAILABLE if failure.unreachable else grpc.StatusCode.ABORTED
    message = failure.message[:MAX_UPSTREAM_MESSAGE]
    return TypecaseError(code, "TOOL_FAILED", f"tool {tool!r} failed: {message}", {"tool": tool})
