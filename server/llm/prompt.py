"""A Generate/Complete request's prompt and options as the adapters' vocabulary: messages with ordered parts and
images, assistant tool calls and tool answers, tool definitions, the tool choice and the response format; checked
field by field, so a bad request fails with the field it concerns before any upstream is called. Also says which
model capabilities the request needs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlparse

import grpc

from typecase.server.llm import schemas
from typecase.server.llm.providers import ChatCall, Image, Message, ResponseFormat, ToolCall, ToolSpec, estimate_tokens
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import common_pb2, llm_pb2

ROLES = {
    common_pb2.MESSAGE_ROLE_SYSTEM: "system",
    common_pb2.MESSAGE_ROLE_USER: "user",
    common_pb2.MESSAGE_ROLE_ASSISTANT: "assistant",
    common_pb2.MESSAGE_ROLE_TOOL: "tool",
}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DETAILS = {llm_pb2.IMAGE_DETAIL_AUTO: "auto", llm_pb2.IMAGE_DETAIL_LOW: "low", llm_pb2.IMAGE_DETAIL_HIGH: "high"}
CHOICES = {
    llm_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    llm_pb2.TOOL_CHOICE_MODE_NONE: "none",
    llm_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
}
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
SAMPLING_DEFAULTS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "max_tokens", "stop")


class FileReader(Protocol):
    """Reads a file stored in Typecase for the current caller: (bytes, media type). Raises TypecaseError
    (NOT_FOUND when the caller may not see it)."""

    async def read(self, file_id: str, max_bytes: int) -> tuple[bytes, str]: ...


@dataclass(slots=True)
class Limits:
    max_tools: int
    max_image_bytes: int


@dataclass(slots=True)
class Prompt:
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = ""
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    needs: tuple[str, ...] = ()  # model capabilities the request needs

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def estimate_tokens(self) -> int:
        """A tokenizer-free estimate of the prompt (an image counts as a low-detail one, ~85 tokens)."""
        tokens = 0
        for m in self.messages:  # plain loops: four generator expressions per message cost more than the sums
            tokens += estimate_tokens(m.text()) + 4
            if m.tool_calls:
                for c in m.tool_calls:
                    tokens += estimate_tokens(c.arguments) + 4
            if m.parts:
                for part in m.parts:
                    if type(part) is not str:
                        tokens += 85
        for t in self.tools:
            tokens += estimate_tokens(t.description) + t.schema_chars // 4
        return tokens


def _struct(value) -> dict[str, Any]:
    from typecase.server.rpc.fields import struct_dict  # proto Struct -> JSON with integral numbers as ints

    return struct_dict(value)


class FileRef(str):
    """A file id standing for an image until it is read (resolve_files)."""


def _too_large(where: str, limit: int) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAYLOAD_TOO_LARGE",
        f"{where}: the image exceeds {limit} bytes",
        {"field": where, "limit_bytes": str(limit)},
    )


def _image(part: llm_pb2.ImagePart, where: str, limits: Limits) -> Image | FileRef:
    """An Image from a URL or data URI; a file id stays a FileRef until it is read."""
    detail = DETAILS.get(part.detail, "")
    source = part.WhichOneof("source")
    if source == "file_id":
        if not part.file_id:
            raise invalid_argument(f"{where}.file_id", "must not be empty")
        return FileRef(part.file_id)
    url = part.url.strip()
    if url.startswith("data:"):
        head, comma, payload = url.partition(",")
        media_type = head[5:].split(";")[0].lower()
        if not comma or not head.endswith(";base64"):
            raise invalid_argument(f"{where}.url", "a data URI must be base64: data:image/png;base64,...")
        if media_type not in IMAGE_TYPES:
            raise invalid_argument(
                f"{where}.url", f"image type {media_type or '(none)'!r} is not one of {', '.join(IMAGE_TYPES)}"
            )
        if len(payload) * 3 // 4 > limits.max_image_bytes + 3:  # checked before decoding
            raise _too_large(f"{where}.url", limits.max_image_bytes)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument(f"{where}.url", "the data URI is not valid base64") from None
        if len(data) > limits.max_image_bytes:
            raise _too_large(f"{where}.url", limits.max_image_bytes)
        return Image(data=data, media_type=media_type, detail=detail)
    parsed = urlparse(url)
    if parsed.scheme != "https" or not parsed.netloc:
        raise invalid_argument(f"{where}.url", "must be an https URL or a data: URI")
    return Image(url=url, detail=detail)


def _message(i: int, m: llm_pb2.ChatMessage, limits: Limits) -> Message:
    where = f"messages[{i}]"
    role = ROLES.get(m.role)
    if role is None:
        raise invalid_argument(f"{where}.role", "must be system, user, assistant or tool")
    message = Message(role, m.content, m.name, m.tool_call_id)
    if m.parts:
        if m.content:
            raise invalid_argument(f"{where}.parts", "send either content or parts, not both")
        parts: list[Any] = []
        for j, part in enumerate(m.parts):
            kind = part.WhichOneof("part")
            if kind == "text":
                parts.append(part.text)
            elif kind == "image":
                if role != "user":
                    raise invalid_argument(f"{where}.parts[{j}]", "only user messages may carry images")
                parts.append(_image(part.image, f"{where}.parts[{j}].image", limits))
            else:
                raise invalid_argument(f"{where}.parts[{j}]", "set text or image")
        message.parts = parts
    if m.tool_calls:
        if role != "assistant":
            raise invalid_argument(f"{where}.tool_calls", "only assistant messages carry tool calls")
        message.tool_calls = []
        for j, call in enumerate(m.tool_calls):
            if not call.id or not call.name:
                raise invalid_argument(f"{where}.tool_calls[{j}]", "id and name are required")
            message.tool_calls.append(ToolCall(call.id, call.name, call.arguments or "{}"))
    if role == "tool" and not m.tool_call_id:
        raise invalid_argument(f"{where}.tool_call_id", "a tool message answers a tool call: set its id")
    return message


@lru_cache(maxsize=1024)
def _tool(serialized: bytes) -> tuple[ToolSpec | None, str, str]:
    """(the tool, "", "") or (None, the field at fault, the problem). Cached by the tool's bytes: agents send the
    same tools with every request, and converting and checking a schema costs ~0.15 ms (a tenth of the time to
    first token Typecase adds)."""
    tool = llm_pb2.Tool.FromString(serialized)
    if not NAME.match(tool.name):
        return None, "name", "must be 1-64 letters, digits, '_' or '-'"
    parameters = _struct(tool.parameters) if tool.HasField("parameters") else dict(EMPTY_PARAMETERS)
    if parameters.get("type", "object") != "object":
        return None, "parameters", "must be the JSON Schema of an object"
    try:
        schemas.check(parameters)
    except schemas.SchemaError as exc:
        return None, "parameters", f"not a valid JSON Schema: {exc}"
    return ToolSpec(tool.name, tool.description, parameters, tool.strict, len(str(parameters))), "", ""


def _tools(request, limits: Limits) -> list[ToolSpec]:
    if len(request.tools) > limits.max_tools:
        raise invalid_argument("tools", f"at most {limits.max_tools} tools")
    tools: list[ToolSpec] = []
    for i, tool in enumerate(request.tools):
        spec, where, problem = _tool(tool.SerializeToString(deterministic=True))
        if spec is None:
            raise invalid_argument(f"tools[{i}].{where}", problem)
        if any(t.name == spec.name for t in tools):
            raise invalid_argument(f"tools[{i}].name", f"{spec.name!r} is defined twice")
        tools.append(spec)
    return tools


def _tool_choice(request, tools: list[ToolSpec]) -> str:
    choice = request.tool_choice
    if choice.tool_name:
        if not any(t.name == choice.tool_name for t in tools):
            raise invalid_argument("tool_choice.tool_name", f"{choice.tool_name!r} is not one of the request's tools")
        return choice.tool_name
    mode = CHOICES.get(choice.mode, "")
    if mode == "required" and not tools:
        raise invalid_argument("tool_choice.mode", "REQUIRED needs tools")
    return mode


def _response_format(request) -> ResponseFormat | None:
    rf = request.response_format
    if rf.type == llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return ResponseFormat("json_object")
    if rf.type != llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        return None
    name = rf.schema_name or "response"
    if not NAME.match(name):
        raise invalid_argument("response_format.schema_name", "must be 1-64 letters, digits, '_' or '-'")
    schema = _struct(rf.schema)
    if not schema:
        raise invalid_argument("response_format.schema", "JSON_SCHEMA needs a schema")
    try:
        schemas.check(schema)
    except schemas.SchemaError as exc:
        raise invalid_argument("response_format.schema", f"not a valid JSON Schema: {exc}") from None
    return ResponseFormat("json_schema", name, schema, rf.strict)


def build_prompt(request, limits: Limits) -> Prompt:
    """The request's prompt, checked. File-id images stay as ids until `resolve_files`."""
    if not request.messages:
        raise invalid_argument("messages", "at least one message is required")
    messages = [_message(i, m, limits) for i, m in enumerate(request.messages)]
    tools = _tools(request, limits)
    prompt = Prompt(
        messages,
        tools,
        _tool_choice(request, tools),
        request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None,
        _response_format(request),
    )
    images = any(isinstance(p, (Image, FileRef)) for m in messages for p in m.parts or ())
    prompt.needs = tuple(
        need
        for need, wanted in (
            ("tools", bool(tools)),
            ("vision", images),
            ("json_schema", prompt.response_format is not None),
        )
        if wanted
    )
    return prompt


async def resolve_files(prompt: Prompt, reader: FileReader | None, limits: Limits) -> None:
    """Reads the images given by Typecase file id (in place)."""
    for i, m in enumerate(prompt.messages):
        if not m.parts:
            continue
        for j, part in enumerate(m.parts):
            if not isinstance(part, FileRef):
                continue
            where = f"messages[{i}].parts[{j}].image.file_id"
            if reader is None:
                raise TypecaseError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "INVALID_ARGUMENT",
                    f"{where}: images by Typecase file id are not supported yet; send the image "
                    "as an https URL or a data: URI",
                    {"field": where},
                )
            data, media_type = await reader.read(str(part), limits.max_image_bytes)
            if media_type not in IMAGE_TYPES:
                raise invalid_argument(
                    where, f"file {str(part)!r} is {media_type or 'not an image'}, not one of {', '.join(IMAGE_TYPES)}"
                )
            m.parts[j] = Image(data=data, media_type=media_type)


def chat_call(model, request: Prompt, config: llm_pb2.GenerationConfig, user: str) -> ChatCall:
    """The call to a model (a ModelRow): request options over the model's configured defaults, max_tokens capped
    at its max_output_tokens; the model's other config keys ride along as extras."""
    extra, defaults, cap, upstream_name = _model_options(model)

    def pick(name: str):
        return getattr(config, name) if config.HasField(name) else defaults.get(name)

    max_tokens = pick("max_tokens")
    if cap and (max_tokens is None or max_tokens > cap):
        max_tokens = cap
    return ChatCall(
        model=upstream_name,
        messages=request.messages,
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=request.response_format,
        max_tokens=max_tokens,
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        stop=list(config.stop) or defaults.get("stop") or [],
        seed=pick("seed"),
        presence_penalty=pick("presence_penalty"),
        frequency_penalty=pick("frequency_penalty"),
        user=user,
        extra=extra,
    )


# Per model row (a registry snapshot's rows are replaced, never edited, on a reload): its config split into extras
# and sampling defaults, its output cap and upstream name, worked out once instead of on every call (a dict copy,
# a dict built and four ORM attribute reads). The extras dict is shared by the calls: adapters only read it.
_MODEL_OPTIONS: dict[int, tuple[Any, tuple[dict[str, Any], dict[str, Any], int | None, str]]] = {}


def _model_options(model) -> tuple[dict[str, Any], dict[str, Any], int | None, str]:
    hit = _MODEL_OPTIONS.get(id(model))
    if hit is not None and hit[0] is model:  # ids are reused once objects are freed
        return hit[1]
    extra = dict(model.config or {})
    defaults = {k: extra.pop(k) for k in SAMPLING_DEFAULTS if k in extra}
    options = (extra, defaults, model.max_output_tokens, model.upstream_name or model.name)
    if len(_MODEL_OPTIONS) >= 4096:
        _MODEL_OPTIONS.clear()
    _MODEL_OPTIONS[id(model)] = (model, options)
    return options
