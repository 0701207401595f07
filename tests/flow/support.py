"""Helpers for the flow tests: graphs, callers, streams, error reasons."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc, flow_pb2, flow_pb2_grpc

PASSWORD = "correct horse battery"


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


ADMIN = bearer(ADMIN_KEY)


@dataclass
class Caller:
    flow: flow_pb2_grpc.FlowServiceStub
    md: tuple
    user_id: str = ""


async def new_user(channel, username: str) -> Caller:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    user = (
        await auth.CreateUser(
            auth_pb2.CreateUserRequest(
                user=auth_pb2.User(username=username, password=PASSWORD, role=auth_pb2.USER_ROLE_USER)
            ),
            metadata=ADMIN,
        )
    ).user
    token = (await auth.Login(auth_pb2.LoginRequest(username=username, password=PASSWORD))).access_token
    return Caller(flow_pb2_grpc.FlowServiceStub(channel), bearer(token), user.id)


def admin(channel) -> Caller:
    return Caller(flow_pb2_grpc.FlowServiceStub(channel), ADMIN)


def node(node_id: str, kind: str, name: str = "", **params: Any) -> flow_pb2.Node:
    message = flow_pb2.Node(id=node_id, type=flow_pb2.NodeType.Value(f"NODE_TYPE_{kind.upper()}"), name=name or node_id)
    if params:
        message.params.update(params)
    return message


def edge(source: str, target: str, handle: str = "") -> flow_pb2.Edge:
    return flow_pb2.Edge(
        id=f"{source}-{target}{'-' + handle if handle else ''}", source=source, target=target, source_handle=handle
    )


def graph(nodes: list[flow_pb2.Node], edges: list[flow_pb2.Edge]) -> flow_pb2.Graph:
    return flow_pb2.Graph(nodes=nodes, edges=edges)


def chain(*nodes: flow_pb2.Node) -> flow_pb2.Graph:
    return graph(list(nodes), [edge(a.id, b.id) for a, b in zip(nodes, nodes[1:], strict=False)])


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(data)
    return value


def to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def create_flow(caller: Caller, name: str, g: flow_pb2.Graph, **fields: Any) -> flow_pb2.Flow:
    reply = await caller.flow.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name, graph=g, **fields)), metadata=caller.md
    )
    return reply.flow


async def collect(stream, timeout: float = 60) -> list:
    async def run():
        return [message async for message in stream]

    return await asyncio.wait_for(run(), timeout)


async def run_flow(
    caller: Caller, flow_id: str, inputs: dict[str, Any] | None = None, timeout: float = 60, **kw: Any
) -> list[flow_pb2.RunFlowResponse]:
    request = flow_pb2.RunFlowRequest(flow_id=flow_id, inputs=struct(inputs or {}), **kw)
    return await collect(caller.flow.RunFlow(request, metadata=caller.md), timeout)


async def resume(caller: Caller, run_id: str, node_id: str, answer: dict[str, Any], timeout: float = 60) -> list:
    request = flow_pb2.ResumeRunRequest(run_id=run_id, node_id=node_id, input=struct(answer))
    return await collect(caller.flow.ResumeRun(request, metadata=caller.md), timeout)


def kinds(events) -> list[str]:
    return [e.event.WhichOneof("kind") for e in events]


def finished_nodes(events) -> list[str]:
    return [
        e.event.node_finished.node_id
        for e in events
        if e.event.HasField("node_finished") and e.event.node_finished.status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED
    ]


def outputs(events) -> dict[str, Any]:
    last = events[-1].event
    assert last.HasField("run_finished"), f"run did not finish: {last}"
    return json_format.MessageToDict(last.run_finished.outputs)


def reason_of(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def reason(error: grpc.aio.AioRpcError) -> str:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    return reason_of(status_pb2.Status.FromString(raw)) if raw else ""


def violations(error: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    found = []
    for detail in status_pb2.Status.FromString(raw).details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            found.extend(request.field_violations)
    return found
