"""An Anthropic Messages request body as a GenerateRequest: the system prompt, user and assistant turns with
text, image, tool_use and tool_result blocks, tools and tool_choice, stop sequences and sampling options. A field
or block Typecase does not honour is a 400 naming it (`null` counts as absent).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import struct_pb2

from typecase.server.compat.common import unknown_fields
from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import common_pb2, llm_pb2

FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "metadata",
}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _text(value: Any, field: str) -> str:
    """A string, or a list of text blocks, as one text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid_argument(field, "must be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid_argument(f"{field}[{i}].type", "only text blocks are supported here")
        unknown_fields(block, {"type", "text", "cache_control", "citations"}, f"{field}[{i}].")
        texts.append(str(block.get("text") or ""))
    return "".join(texts)


def _image(block: dict[str, Any], where: str) -> llm_pb2.ContentPart:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_argument(f"{where}.source", "required")
    if source.get("type") == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_TYPES:
            raise invalid_argument(f"{where}.source.media_type", f"must be one of {', '.join(IMAGE_TYPES)}")
        url = f"data:{media_type};base64,{source.get('data') or ''}"
    elif source.get("type") == "url":
        url = str(source.get("url") or "")
    else:
        raise invalid_argument(f"{where}.source.type", "must be base64 or url")
    return llm_pb2.ContentPart(image=llm_pb2.ImagePart(url=url))


def _turn(i: int, m: Any, request: llm_pb2.GenerateRequest) -> None:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
        raise invalid_argument(f"{where}.role", "must be user or assistant")
    unknown_fields(m, {"role", "content"}, f"{where}.")
    role = common_pb2.MESSAGE_ROLE_USER if m["role"] == "user" else common_pb2.MESSAGE_ROLE_ASSISTANT
    content = m.get("content")
    if isinstance(content, str):
        request.messages.add(role=role, content=content)
        return
    if not isinstance(content, list):
        raise invalid_argument(f"{where}.content", "must be a string or a list of content blocks")
    message = llm_pb2.ChatMessage(role=role)
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            unknown_fields(block, {"type", "text", "cache_control", "citations"}, f"{at}.")
            message.parts.add(text=str(block.get("text") or ""))
        elif kind == "image" and role == common_pb2.MESSAGE_ROLE_USER:
            unknown_fields(block, {"type", "source", "cache_control"}, f"{at}.")
            message.parts.append(_image(block, at))
        elif kind == "tool_use" and role == common_pb2.MESSAGE_ROLE_ASSISTANT:
            unknown_fields(block, {"type", "id", "name", "input", "cache_control"}, f"{at}.")
            message.tool_calls.add(
                id=str(block.get("id") or ""),
                name=str(block.get("name") or ""),
                arguments=json.dumps(block.get("input") or {}, ensure_ascii=False),
            )
        elif kind == "tool_result" and role == common_pb2.MESSAGE_ROLE_USER:
            unknown_fields(block, {"type", "tool_use_id", "content", "is_error", "cache_control"}, f"{at}.")
            text = _text(block.get("content") or "", f"{at}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            request.messages.add(
                role=common_pb2.MESSAGE_ROLE_TOOL, tool_call_id=str(block.get("tool_use_id") or ""), content=text
            )
        else:
            raise invalid_argument(f"{at}.type", f"{kind!r} blocks are not supported in {m['role']} messages")
    if message.tool_calls or any(p.WhichOneof("part") == "image" for p in message.parts):
        request.messages.append(message)
    elif message.parts:  # text only: plain content
        request.messages.add(role=role, content="".join(p.text for p in message.parts))


def _tools(data: dict[str, Any], request: llm_pb2.GenerateRequest) -> None:
    tools = data.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_argument("tools", "must be a list")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            raise invalid_argument(f"{where}.type", "only custom (client) tools are supported")
        unknown_fields(tool, {"type", "name", "description", "input_schema", "cache_control"}, f"{where}.")
        spec = request.tools.add(name=str(tool.get("name") or ""), description=str(tool.get("description") or ""))
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid_argument(f"{where}.input_schema", "required: the JSON Schema of the tool's input")
        spec.parameters.CopyFrom(_struct(schema, f"{where}.input_schema"))
    choice = data.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise invalid_argument("tool_choice", "must be an object")
    unknown_fields(choice, {"type", "name", "disable_parallel_tool_use"}, "tool_choice.")
    kind = choice.get("type")
    if kind == "auto":
        request.tool_choice.mode = llm_pb2.TOOL_CHOICE_MODE_AUTO
    elif kind == "any":
        request.tool_choice.mode = llm_pb2.TOOL_CHOICE_MODE_REQUIRED
    elif kind == "none":
        request.tool_choice.mode = llm_pb2.TOOL_CHOICE_MODE_NONE
    elif kind == "tool" and isinstance(choice.get("name"), str):
        request.tool_choice.tool_name = choice["name"]
    else:
        raise invalid_argument("tool_choice.type", "must be auto, any, none or tool (with a name)")
    if choice.get("disable_parallel_tool_use"):
        request.parallel_tool_calls = False


def _struct(value: dict[str, Any], field: str) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (ValueError, TypeError) as exc:
        raise invalid_argument(field, f"cannot be represented: {exc}") from None
    return struct


def messages_request(data: dict[str, Any]) -> llm_pb2.GenerateRequest:
    unknown_fields(data, FIELDS)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_argument("model", "required")
    max_tokens = data.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid_argument("max_tokens", "required: a positive integer")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_argument("messages", "must be a non-empty list")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise invalid_argument("metadata", "must be an object")
    unknown_fields(metadata, {"user_id"}, "metadata.")
    request = llm_pb2.GenerateRequest(model_id=model, user=str(metadata.get("user_id") or ""))
    if data.get("system"):
        request.messages.add(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=_text(data["system"], "system"))
    for i, m in enumerate(messages):
        _turn(i, m, request)
    config = request.config
    config.max_tokens = max_tokens
    try:
        for name in ("temperature", "top_p"):
            if data.get(name) is not None:
                setattr(config, name, float(data[name]))
    except (TypeError, ValueError):
        raise invalid_argument("body", "numeric options must be numbers") from None
    stop = data.get("stop_sequences") or []
    if not isinstance(stop, list):
        raise invalid_argument("stop_sequences", "must be a list of strings")
    config.stop.extend(str(s) for s in stop)
    _tools(data, request)
    return request
