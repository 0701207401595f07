"""Rows to messages and back for the flow domain."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import duration_pb2, json_format, struct_pb2
from google.rpc import status_pb2

from typecase.server.flow.graph import graph_message
from typecase.server.flow.models import (
    DRAFT,
    FAILED,
    FINISHED,
    ONLINE,
    RUN_AS_CALLER,
    RUN_AS_OWNER,
    RUNNING,
    STOPPED,
    WAITING,
    FlowRow,
    FlowRunNodeRow,
    FlowRunRow,
    FlowVersionRow,
)
from typecase.server.rpc.convert import to_timestamp
from typecase.v1 import common_pb2, flow_pb2

FLOW_STATUS = {DRAFT: flow_pb2.FLOW_STATUS_DRAFT, ONLINE: flow_pb2.FLOW_STATUS_ONLINE}
FLOW_STATUS_NAMES = {v: k for k, v in FLOW_STATUS.items()}
RUN_AS = {RUN_AS_CALLER: flow_pb2.FLOW_RUN_AS_CALLER, RUN_AS_OWNER: flow_pb2.FLOW_RUN_AS_OWNER}
RUN_AS_NAMES = {**{v: k for k, v in RUN_AS.items()}, flow_pb2.FLOW_RUN_AS_UNSPECIFIED: RUN_AS_CALLER}
RUN_STATUS = {
    RUNNING: flow_pb2.RUN_STATUS_RUNNING,
    WAITING: flow_pb2.RUN_STATUS_WAITING_INPUT,
    FINISHED: flow_pb2.RUN_STATUS_FINISHED,
    FAILED: flow_pb2.RUN_STATUS_FAILED,
    STOPPED: flow_pb2.RUN_STATUS_STOPPED,
}
RUN_STATUS_NAMES = {v: k for k, v in RUN_STATUS.items()}
NODE_STATUS = {
    "running": flow_pb2.NODE_RUN_STATUS_RUNNING,
    "waiting_input": flow_pb2.NODE_RUN_STATUS_WAITING_INPUT,
    "succeeded": flow_pb2.NODE_RUN_STATUS_SUCCEEDED,
    "failed": flow_pb2.NODE_RUN_STATUS_FAILED,
    "skipped": flow_pb2.NODE_RUN_STATUS_SKIPPED,
    "stopped": flow_pb2.NODE_RUN_STATUS_STOPPED,
}


def to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    if data:
        value.update(json_safe(data))
    return value


def json_safe(value: Any) -> Any:
    """A value Struct can hold: dict keys as text, tuples as lists, anything else unknown as text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return value


def usage(prompt: int, completion: int) -> common_pb2.Usage:
    return common_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def status_message(data: dict[str, Any] | None) -> status_pb2.Status | None:
    if not data:
        return None
    return json_format.ParseDict(data, status_pb2.Status(), ignore_unknown_fields=True)


def input_required(data: dict[str, Any] | None) -> flow_pb2.InputRequired:
    return json_format.ParseDict(data or {}, flow_pb2.InputRequired(), ignore_unknown_fields=True)


def flow_message(row: FlowRow, graph: dict[str, Any] | None = None) -> flow_pb2.Flow:
    message = flow_pb2.Flow(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        description=row.description,
        logo=row.logo,
        status=FLOW_STATUS.get(row.status, flow_pb2.FLOW_STATUS_UNSPECIFIED),
        current_version_id=row.current_version_id,
        run_as=RUN_AS.get(row.run_as, flow_pb2.FLOW_RUN_AS_CALLER),
        publish_time=to_timestamp(row.publish_time),
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )
    if graph is not None:
        message.graph.CopyFrom(graph_message(graph))
    return message


def version_message(row: FlowVersionRow, current_id: str, with_graph: bool = True) -> flow_pb2.FlowVersion:
    message = flow_pb2.FlowVersion(
        id=row.id,
        flow_id=row.flow_id,
        name=row.name,
        description=row.description,
        from_version_id=row.from_version_id,
        is_current=row.id == current_id,
        owner_id=row.owner_id,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )
    if with_graph:
        message.graph.CopyFrom(graph_message(row.graph))
    return message


def node_message(row: FlowRunNodeRow) -> flow_pb2.NodeRun:
    message = flow_pb2.NodeRun(
        node_id=row.node_id,
        node_type=cast(flow_pb2.NodeType, row.node_type),
        node_name=row.node_name,
        status=NODE_STATUS.get(row.status, flow_pb2.NODE_RUN_STATUS_UNSPECIFIED),
        inputs=struct(row.inputs),
        outputs=struct(row.outputs),
        usage=usage(row.prompt_tokens, row.completion_tokens),
        start_time=to_timestamp(row.start_time),
        end_time=to_timestamp(row.end_time),
        attempt=row.attempt,
    )
    if row.error:
        message.error.CopyFrom(status_message(row.error))
    if row.end_time is not None:
        message.elapsed.CopyFrom(duration(row.elapsed_ms / 1000))
    return message


def run_message(row: FlowRunRow, nodes: list[FlowRunNodeRow] | None = None) -> flow_pb2.Run:
    message = flow_pb2.Run(
        id=row.id,
        flow_id=row.flow_id,
        version_id=row.version_id,
        owner_id=row.owner_id,
        session_id=row.session_id,
        status=RUN_STATUS.get(row.status, flow_pb2.RUN_STATUS_UNSPECIFIED),
        inputs=struct(row.inputs),
        outputs=struct(row.outputs),
        usage=usage(row.prompt_tokens, row.completion_tokens),
        last_seq=row.last_seq,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        end_time=to_timestamp(row.end_time),
    )
    if row.status == WAITING and row.pending_input:
        message.pending_input.CopyFrom(input_required(row.pending_input))
    if row.error:
        message.error.CopyFrom(status_message(row.error))
    for node in nodes or ():
        message.nodes.append(node_message(node))
    return message
