"""Rows <-> proto messages of the assistants domain: the row's JSON spec is the Assistant message's settings in
proto JSON, so adding a setting to assistant.proto needs no migration and no code here."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from typecase.server.assistants.models import AssistantRow
from typecase.v1 import assistant_pb2

STATUS_NAMES = {assistant_pb2.ASSISTANT_STATUS_DRAFT: "draft", assistant_pb2.ASSISTANT_STATUS_ONLINE: "online"}
STATUS_VALUES = {v: k for k, v in STATUS_NAMES.items()}
# Fields kept in columns or set by the server, never in the spec document.
COLUMNS = ("id", "owner_id", "name", "description", "model_id", "status", "create_time", "update_time")


def spec_of(message: assistant_pb2.Assistant) -> dict[str, Any]:
    """The settings of `message` to store as the row's spec."""
    copy = assistant_pb2.Assistant()
    copy.CopyFrom(message)
    for name in COLUMNS:
        copy.ClearField(name)
    return json_format.MessageToDict(copy, preserving_proto_field_name=True)


def assistant_message(row: AssistantRow) -> assistant_pb2.Assistant:
    message = assistant_pb2.Assistant()
    json_format.ParseDict(row.spec or {}, message, ignore_unknown_fields=True)
    message.id = row.id
    message.owner_id = row.owner_id
    message.name = row.name
    message.description = row.description or ""
    message.model_id = row.model_id or ""
    message.status = STATUS_VALUES.get(row.status, assistant_pb2.ASSISTANT_STATUS_DRAFT)
    message.create_time.FromDatetime(row.create_time)
    message.update_time.FromDatetime(row.update_time)
    return message
