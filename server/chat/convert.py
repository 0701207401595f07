"""Rows of the chat tables to and from their protobuf messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from typecase.server.chat.models import (
    COMPLETE,
    FAILED,
    STOPPED,
    STREAMING,
    ChatMessageRow,
    ChatSessionRow,
)
from typecase.server.rpc.convert import to_timestamp
from typecase.v1 import chat_pb2, common_pb2, flow_pb2

KIND_TO_PROTO = {
    "model": chat_pb2.SESSION_KIND_MODEL,
    "flow": chat_pb2.SESSION_KIND_FLOW,
    "agent": chat_pb2.SESSION_KIND_ASSISTANT,
}
ROLE_TO_PROTO = {
    "user": common_pb2.MESSAGE_ROLE_USER,
    "assistant": common_pb2.MESSAGE_ROLE_ASSISTANT,
    "system": common_pb2.MESSAGE_ROLE_SYSTEM,
}
CATEGORY_TO_PROTO = {
    "question": chat_pb2.MESSAGE_CATEGORY_QUESTION,
    "answer": chat_pb2.MESSAGE_CATEGORY_ANSWER,
    "guide": chat_pb2.MESSAGE_CATEGORY_GUIDE,
    "input_request": chat_pb2.MESSAGE_CATEGORY_INPUT_REQUEST,
    "notice": chat_pb2.MESSAGE_CATEGORY_NOTICE,
}
STATUS_TO_PROTO = {
    COMPLETE: chat_pb2.MESSAGE_STATUS_COMPLETE,
    STREAMING: chat_pb2.MESSAGE_STATUS_STREAMING,
    STOPPED: chat_pb2.MESSAGE_STATUS_STOPPED,
    FAILED: chat_pb2.MESSAGE_STATUS_FAILED,
}
RATING_TO_PROTO = {"like": chat_pb2.MESSAGE_RATING_LIKE, "dislike": chat_pb2.MESSAGE_RATING_DISLIKE}
FINISH_TO_PROTO = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "content_filter": common_pb2.FINISH_REASON_CONTENT_FILTER,
    "tool_calls": common_pb2.FINISH_REASON_TOOL_CALLS,
    "cancelled": common_pb2.FINISH_REASON_CANCELLED,
    "error": common_pb2.FINISH_REASON_ERROR,
    "max_steps": common_pb2.FINISH_REASON_MAX_STEPS,
}
FINISH_FROM_PROTO = {v: k for k, v in FINISH_TO_PROTO.items()}


def to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if not value:
        return None
    out = struct_pb2.Struct()
    out.update(value)
    return out


def struct_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def status_dict(status: status_pb2.Status) -> dict[str, Any]:
    return to_dict(status)


def session_message(row: ChatSessionRow, *, show_delete_time: bool = False) -> chat_pb2.Session:
    return chat_pb2.Session(
        id=row.id,
        owner_id=row.owner_id,
        title=row.title,
        kind=KIND_TO_PROTO.get(row.kind, chat_pb2.SESSION_KIND_UNSPECIFIED),
        model_id=row.model_id,
        flow_id=row.flow_id,
        flow_version_id=row.flow_version_id,
        assistant_id=row.assistant_id or "",
        variables=dict(row.variables or {}),
        system_prompt=row.system_prompt,
        kb_ids=list(row.kb_ids or []),
        app_name=row.app_name,
        latest_message_preview=row.latest_message_preview,
        latest_message_time=to_timestamp(row.latest_message_time),
        message_count=row.message_count,
        like_count=row.like_count,
        dislike_count=row.dislike_count,
        copied_count=row.copied_count,
        metadata=struct(row.meta),
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        delete_time=to_timestamp(row.delete_time) if show_delete_time else None,
    )


def message_message(row: ChatMessageRow) -> chat_pb2.Message:
    message = chat_pb2.Message(
        id=row.id,
        session_id=row.session_id,
        turn_id=row.turn_id,
        role=ROLE_TO_PROTO.get(row.role, common_pb2.MESSAGE_ROLE_UNSPECIFIED),
        category=CATEGORY_TO_PROTO.get(row.category, chat_pb2.MESSAGE_CATEGORY_UNSPECIFIED),
        content=row.content,
        status=STATUS_TO_PROTO.get(row.status, chat_pb2.MESSAGE_STATUS_UNSPECIFIED),
        finish_reason=FINISH_TO_PROTO.get(row.finish_reason, common_pb2.FINISH_REASON_UNSPECIFIED),
        model_id=row.model_id,
        rating=RATING_TO_PROTO.get(row.rating, chat_pb2.MESSAGE_RATING_UNSPECIFIED),
        feedback_comment=row.feedback_comment,
        copied_count=row.copied_count,
        metadata=struct(row.meta),
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )
    if row.prompt_tokens or row.completion_tokens:
        message.usage.CopyFrom(usage(row.prompt_tokens, row.completion_tokens))
    for citation in row.citations or ():
        json_format.ParseDict(citation, message.citations.add(), ignore_unknown_fields=True)
    for attachment in row.attachments or ():
        json_format.ParseDict(attachment, message.attachments.add(), ignore_unknown_fields=True)
    for step in row.steps or ():
        json_format.ParseDict(step, message.steps.add(), ignore_unknown_fields=True)
    if row.input_required:
        json_format.ParseDict(row.input_required, message.input_required, ignore_unknown_fields=True)
    if row.error:
        json_format.ParseDict(row.error, message.error, ignore_unknown_fields=True)
    return message


def usage(prompt_tokens: int, completion_tokens: int) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def node_event_dict(run_id: str, node: flow_pb2.NodeRun) -> dict[str, Any]:
    return to_dict(chat_pb2.NodeEvent(run_id=run_id, node=node))
