"""Helpers for the tools tests: callers, error reasons, servers started on loopback."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc, tools_pb2, tools_pb2_grpc

PASSWORD = "correct horse battery"
_names = itertools.count()


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


@dataclass
class Caller:
    tools: tools_pb2_grpc.ToolServiceStub
    md: tuple
    credential: str
    user_id: str = ""


async def new_user(channel, prefix: str = "user") -> Caller:
    username = f"{prefix}{next(_names)}"
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    user = (
        await auth.CreateUser(
            auth_pb2.CreateUserRequest(
                user=auth_pb2.User(username=username, password=PASSWORD, role=auth_pb2.USER_ROLE_USER)
            ),
            metadata=bearer(ADMIN_KEY),
        )
    ).user
    token = (await auth.Login(auth_pb2.LoginRequest(username=username, password=PASSWORD))).access_token
    return Caller(tools_pb2_grpc.ToolServiceStub(channel), bearer(token), token, user.id)


def admin(channel) -> Caller:
    return Caller(tools_pb2_grpc.ToolServiceStub(channel), bearer(ADMIN_KEY), ADMIN_KEY)


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(data)
    return value


def to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def reason(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


async def call(
    caller: Caller, tool_id: str, arguments: dict[str, Any] | None = None, timeout_ms: int = 0
) -> tools_pb2.CallToolResponse:
    return await caller.tools.CallTool(
        tools_pb2.CallToolRequest(tool_id=tool_id, arguments=struct(arguments or {}), timeout_ms=timeout_ms),
        metadata=caller.md,
    )


async def tool_by_name(caller: Caller, provider_id: str, name: str) -> tools_pb2.CatalogTool:
    listed = await caller.tools.ListTools(
        tools_pb2.ListToolsRequest(provider_id=provider_id, page_size=1000), metadata=caller.md
    )
    for tool in listed.tools:
        if tool.name == name:
            return tool
    raise AssertionError(f"no tool {name!r} in {[t.name for t in listed.tools]}")
