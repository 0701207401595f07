"""An OpenAI chat-completions request body as a GenerateRequest: messages (text and image_url parts, assistant
tool_calls, tool answers), tools, tool_choice, parallel_tool_calls, response_format and the sampling options.
Every field OpenAI defines that Typecase does not honour is a 400 naming it (`null` counts as absent), so an SDK
caller learns at once what was not done rather than getting a plain answer and guessing why.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from typecase.server.compat.common import unknown_fields
from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import common_pb2, llm_pb2

ROLES = {
    "system": common_pb2.MESSAGE_ROLE_SYSTEM,
    "developer": common_pb2.MESSAGE_ROLE_SYSTEM,
    "user": common_pb2.MESSAGE_ROLE_USER,
    "assistant": common_pb2.MESSAGE_ROLE_ASSISTANT,
    "tool": common_pb2.MESSAGE_ROLE_TOOL,
}
DETAILS = {"auto": llm_pb2.IMAGE_DETAIL_AUTO, "low": llm_pb2.IMAGE_DETAIL_LOW, "high": llm_pb2.IMAGE_DETAIL_HIGH}
CHOICES = {
    "auto": llm_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": llm_pb2.TOOL_CHOICE_MODE_NONE,
    "required": llm_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
FIELDS = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "n",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
}
# Fields whose value asks for nothing beyond what Typecase does anyway (SDKs and frameworks send them so).
DEFAULTS = {"n": 1, "logprobs": False, "store": False, "stream": False}
MESSAGE_FIELDS = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


def _struct(value: Any, field: str) -> struct_pb2.Struct:
    if not isinstance(value, dict):
        raise invalid_argument(field, "must be a JSON object")
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (ValueError, TypeError) as exc:
        raise invalid_argument(field, f"cannot be represented: {exc}") from None
    return struct


def _parts(value: Any, field: str, images: bool) -> list[llm_pb2.ContentPart]:
    parts = []
    for i, part in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(part, dict):
            raise invalid_argument(where, "must be a content part object")
        kind = part.get("type")
        if kind == "text":
            unknown_fields(part, {"type", "text"}, f"{where}.")
            parts.append(llm_pb2.ContentPart(text=str(part.get("text") or "")))
        elif kind == "image_url" and images:
            unknown_fields(part, {"type", "image_url"}, f"{where}.")
            image = part.get("image_url")
            if isinstance(image, str):
                image = {"url": image}
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise invalid_argument(f"{where}.image_url.url", "required")
            unknown_fields(image, {"url", "detail"}, f"{where}.image_url.")
            detail = image.get("detail")
            if detail is not None and detail not in DETAILS:
                raise invalid_argument(f"{where}.image_url.detail", "must be auto, low or high")
            parts.append(
                llm_pb2.ContentPart(
                    image=llm_pb2.ImagePart(
                        url=image["url"], detail=DETAILS.get(detail or "", llm_pb2.IMAGE_DETAIL_UNSPECIFIED)
                    )
                )
            )
        else:
            allowed = "text or image_url" if images else "text"
            raise invalid_argument(f"{where}.type", f"{kind!r} is not supported here (use {allowed})")
    return parts


def _message(i: int, m: Any) -> llm_pb2.ChatMessage:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise invalid_argument(f"{where}.role", "must be system, developer, user, assistant or tool")
    unknown_fields(m, MESSAGE_FIELDS, f"{where}.")
    message = llm_pb2.ChatMessage(
        role=ROLES[m["role"]], name=str(m.get("name") or ""), tool_call_id=str(m.get("tool_call_id") or "")
    )
    content = m.get("content")
    if isinstance(content, list):
        parts = _parts(content, f"{where}.content", images=m["role"] == "user")
        if all(p.WhichOneof("part") == "text" for p in parts):  # text only: plain content, as upstreams like best
            message.content = "".join(p.text for p in parts)
        else:
            message.parts.extend(parts)
    elif isinstance(content, str):
        message.content = content
    elif content is not None:
        raise invalid_argument(f"{where}.content", "must be a string or a list of content parts")
    for j, call in enumerate(m.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise invalid_argument(f"{where}.tool_calls[{j}]", "must be a function call")
        unknown_fields(call, {"id", "type", "function", "index"}, f"{where}.tool_calls[{j}].")
        unknown_fields(function, {"name", "arguments"}, f"{where}.tool_calls[{j}].function.")
        arguments = function.get("arguments")
        message.tool_calls.add(
            id=str(call.get("id") or ""),
            name=str(function.get("name") or ""),
            arguments=arguments if isinstance(arguments, str) else "{}",
        )
    return message


def _tools(data: dict[str, Any], request: llm_pb2.GenerateRequest) -> None:
    tools = data.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_argument("tools", "must be a list")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise invalid_argument(f"{where}.type", "only function tools are supported")
        function = tool["function"]
        unknown_fields(tool, {"type", "function"}, f"{where}.")
        unknown_fields(function, {"name", "description", "parameters", "strict"}, f"{where}.function.")
        spec = request.tools.add(
            name=str(function.get("name") or ""),
            description=str(function.get("description") or ""),
            strict=bool(function.get("strict")),
        )
        if function.get("parameters") is not None:
            spec.parameters.CopyFrom(_struct(function["parameters"], f"{where}.function.parameters"))
    choice = data.get("tool_choice")
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise invalid_argument("tool_choice", "must be none, auto, required or a function")
        request.tool_choice.mode = CHOICES[choice]
    elif isinstance(choice, dict):
        unknown_fields(choice, {"type", "function"}, "tool_choice.")
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if not isinstance(name, str) or not name:
            raise invalid_argument("tool_choice", 'must be {"type": "function", "function": {"name": ...}}')
        request.tool_choice.tool_name = name
    elif choice is not None:
        raise invalid_argument("tool_choice", "must be none, auto, required or a function")
    if data.get("parallel_tool_calls") is not None:
        request.parallel_tool_calls = bool(data["parallel_tool_calls"])


def _response_format(data: dict[str, Any], request: llm_pb2.GenerateRequest) -> None:
    rf = data.get("response_format")
    if rf is None:
        return
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind is not None:
        unknown_fields(rf, {"type", "json_schema"}, "response_format.")
    if kind == "text":
        request.response_format.type = llm_pb2.RESPONSE_FORMAT_TYPE_TEXT
    elif kind == "json_object":
        request.response_format.type = llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    elif kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid_argument("response_format.json_schema", "required")
        unknown_fields(spec, {"name", "schema", "strict", "description"}, "response_format.json_schema.")
        request.response_format.type = llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.response_format.schema_name = str(spec.get("name") or "")
        request.response_format.strict = bool(spec.get("strict"))
        request.response_format.schema.CopyFrom(_struct(spec.get("schema") or {}, "response_format.json_schema.schema"))
    else:
        raise invalid_argument("response_format.type", "must be text, json_object or json_schema")


def chat_request(data: dict[str, Any]) -> llm_pb2.GenerateRequest:
    for name, value in data.items():
        if name not in FIELDS and value is not None and DEFAULTS.get(name, object()) != value:
            raise invalid_argument(name, "is not supported by Typecase")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_argument("model", "required")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_argument("messages", "must be a non-empty list")
    if data.get("n") not in (None, 1):
        raise invalid_argument("n", "only n=1 is supported")
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid_argument("stream_options", "must be an object")
        unknown_fields(options, {"include_usage"}, "stream_options.")
    request = llm_pb2.GenerateRequest(model_id=model, user=str(data.get("user") or ""))
    request.messages.extend(_message(i, m) for i, m in enumerate(messages))
    config = request.config
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    try:
        if max_tokens is not None:
            config.max_tokens = int(max_tokens)
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            if data.get(name) is not None:
                setattr(config, name, float(data[name]))
        if data.get("seed") is not None:
            config.seed = int(data["seed"])
    except (TypeError, ValueError):
        raise invalid_argument("body", "numeric options must be numbers") from None
    stop = data.get("stop")
    if stop:
        config.stop.extend([stop] if isinstance(stop, str) else [str(s) for s in stop])
    _tools(data, request)
    _response_format(data, request)
    return request
