"""The built-in local models reached in another process: the adapter `serve --workers` workers use.

Each worker loading its own SmolLM2 and MiniLM would hold N copies (~300 MB each) fighting for the same cores, so
under `serve --workers` one model-host process (server/llm/modelhost.py) runs the LocalAdapter and every worker
talks to it over gRPC on a Unix socket in the data dir. Requests are JSON (a ChatCall whole, extras, timeouts and
JSON Schemas kept exactly: a protobuf Struct would turn a schema's integers into floats), answers are the public
API's messages (GenerateResponse, EmbedResponse). Errors cross as the UpstreamError they were (kind, message,
status) in the status details, so retries, breakers and the caller's error code are what one process gives.
Cancelling the consumer cancels the RPC, and the host stops the generation at the next token, as in-process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import orjson

from typecase.v1 import common_pb2, llm_pb2

from . import (
    UNAVAILABLE,
    Adapter,
    ChatCall,
    Delta,
    EmbedResult,
    Message,
    ResponseFormat,
    Timeouts,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    UpstreamError,
)

SERVICE = "typecase.internal.LocalModels"
GENERATE = f"/{SERVICE}/Generate"
EMBED = f"/{SERVICE}/Embed"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # embedding batches of long texts; the socket is private to the machine
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # a restarted host is reconnected to within a second or two, not after gRPC's default backoff of up to 120 s
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
ERROR_MARK = "upstream-error:"  # status details carrying a JSON UpstreamError


# -- the wire ---------------------------------------------------------------------------------------------------
def encode_call(call: ChatCall, timeouts: Timeouts) -> bytes:
    data = dataclasses.asdict(call)
    for message, original in zip(data["messages"], call.messages, strict=True):
        if original.parts is not None:  # the local model reads text only (Message.text()): images stay here
            message["parts"] = [p for p in original.parts if type(p) is str]
    return orjson.dumps({"call": data, "timeouts": dataclasses.asdict(timeouts)})


def decode_call(blob: bytes) -> tuple[ChatCall, Timeouts]:
    data = orjson.loads(blob)
    call: dict[str, Any] = data["call"]
    call["messages"] = [
        Message(**{**m, "tool_calls": [ToolCall(**c) for c in m["tool_calls"]] if m["tool_calls"] else None})
        for m in call["messages"]
    ]
    call["tools"] = [ToolSpec(**t) for t in call["tools"]]
    if call["response_format"] is not None:
        call["response_format"] = ResponseFormat(**call["response_format"])
    return ChatCall(**call), Timeouts(**data["timeouts"])


def delta_to_pb(delta: Delta) -> llm_pb2.GenerateResponse:
    out = llm_pb2.GenerateResponse(text=delta.text, reasoning_text=delta.reasoning)
    out.finish_reason = delta.finish_reason
    if delta.prompt_tokens is not None or delta.completion_tokens is not None:
        out.usage.CopyFrom(
            common_pb2.Usage(prompt_tokens=delta.prompt_tokens or 0, completion_tokens=delta.completion_tokens or 0)
        )
    for c in delta.tool_calls or ():
        out.tool_calls.add(index=c.index, id=c.id, name=c.name, arguments=c.arguments)
    return out


def delta_from_pb(out: llm_pb2.GenerateResponse) -> Delta:
    usage = out.HasField("usage")
    calls = [ToolCallDelta(c.index, c.id, c.name, c.arguments) for c in out.tool_calls]
    return Delta(
        out.text,
        out.reasoning_text,
        out.finish_reason,
        out.usage.prompt_tokens if usage else None,
        out.usage.completion_tokens if usage else None,
        calls or None,
    )


def encode_error(exc: UpstreamError) -> str:
    fields = {"kind": exc.kind, "message": exc.message, "status": exc.status, "retry_after": exc.retry_after}
    return ERROR_MARK + orjson.dumps(fields).decode()


def decode_error(exc: grpc.aio.AioRpcError) -> UpstreamError:
    details = exc.details() or ""
    if details.startswith(ERROR_MARK):
        data = orjson.loads(details[len(ERROR_MARK) :])
        return UpstreamError(data["kind"], data["message"], status=data["status"], retry_after=data["retry_after"])
    return UpstreamError(UNAVAILABLE, f"the local model host did not answer: {exc.code().name} {details}".strip())


# -- the adapter ------------------------------------------------------------------------------------------------
class RemoteLocalAdapter(Adapter):
    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self._channel: grpc.aio.Channel | None = None

    def _method(self, name: str, response: Any):
        if self._channel is None:  # made on first use, in the loop that uses it
            self._channel = grpc.aio.insecure_channel(f"unix:{self.socket_path}", options=CHANNEL_OPTIONS)
        if name == GENERATE:
            return self._channel.unary_stream(name, response_deserializer=response.FromString)
        return self._channel.unary_unary(
            name, request_serializer=llm_pb2.EmbedRequest.SerializeToString, response_deserializer=response.FromString
        )

    async def stream_chat(self, call: ChatCall, timeouts: Timeouts) -> AsyncGenerator[Delta, None]:
        rpc = self._method(GENERATE, llm_pb2.GenerateResponse)(encode_call(call, timeouts))
        try:
            async for out in rpc:
                yield delta_from_pb(out)
        except grpc.aio.AioRpcError as exc:
            raise decode_error(exc) from None
        finally:
            rpc.cancel()  # the consumer left (or the stream ended: a no-op): the host stops generating

    async def embed(
        self, model: str, texts: list[str], timeouts: Timeouts, *, dimensions: int = 0, input_type: str = ""
    ) -> EmbedResult:
        request = llm_pb2.EmbedRequest(model_id=model, inputs=texts, dimensions=dimensions)
        # The host applies timeouts.first_token; the deadline here only guards against a host that hangs.
        deadline = timeouts.first_token + timeouts.connect
        try:
            reply = await self._method(EMBED, llm_pb2.EmbedResponse)(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise decode_error(exc) from None
        return EmbedResult([list(e.values) for e in reply.embeddings], reply.usage.prompt_tokens)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
