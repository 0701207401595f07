"""The OpenAI-compatible API under /openai/v1 (chat/completions, embeddings, models), so OpenAI SDKs and the tools
built on them work with base_url=http://HOST:8080/openai/v1 and a Typecase API key. Thin over LLMService's Python
API: tool calls stream as `delta.tool_calls` exactly in OpenAI's chunk format (index, id and name on a call's first
chunk, argument fragments after), and answers carry `tool_calls` whole.
"""

from __future__ import annotations

import base64
import contextlib
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Protocol

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from typecase.server.agent.loop import Finished, TextDelta
from typecase.server.compat.common import (
    SSE_HEADERS,
    CallerAuth,
    EventStream,
    Surface,
    dumps,
    status_of,
    unknown_fields,
)
from typecase.server.compat.openai_request import EMBEDDING_FIELDS, chat_request
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import common_pb2, llm_pb2

PREFIX = "/openai/v1"
FINISH: dict[int, str] = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    common_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    common_pb2.FINISH_REASON_CANCELLED: "stop",
    common_pb2.FINISH_REASON_ERROR: "stop",
}
AGENT_FINISH: dict[int, str] = {**FINISH, common_pb2.FINISH_REASON_MAX_STEPS: "length"}
ASSISTANT_PREFIX = "assistant:"
# OpenAI's error "type" for each HTTP status Typecase answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
    501: "invalid_request_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(error: TypecaseError, status: int) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": ERROR_TYPES.get(status, "api_error"),
            "param": error.metadata.get("field"),
            "code": error.reason.lower(),
        }
    }


def error_response(error: TypecaseError, status: int) -> Response:
    headers = {"retry-after": str(max(1, round(error.retry_after)))} if error.retry_after else None
    return JSONResponse(error_body(error, status), status_code=status, headers=headers)


def _usage(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _tool_call_chunks(pieces) -> list[dict[str, Any]]:
    out = []
    for piece in pieces:
        chunk: dict[str, Any] = {"index": piece.index}
        if piece.id or piece.name:  # a call's first chunk
            chunk.update(id=piece.id, type="function", function={"name": piece.name, "arguments": piece.arguments})
        else:
            chunk["function"] = {"arguments": piece.arguments}
        out.append(chunk)
    return out


class AgentModels(Protocol):
    """Assistants as models (agent_wiring.Agents): found by "assistant:<id>" or name, run with their tools."""

    async def by_model(self, ref: str) -> Any: ...

    async def listed(self) -> list[Any]: ...

    def run(
        self, assistant: Any, messages: list[llm_pb2.ChatMessage], config: llm_pb2.GenerationConfig, user: str
    ) -> AsyncGenerator[Any, None]: ...


class OpenAICompat(Surface):
    def __init__(
        self,
        llm,
        auth: CallerAuth,
        max_body_bytes: int,
        reason_http_status: Mapping[str, int],
        agents: AgentModels | None = None,
    ):
        super().__init__(llm, auth, max_body_bytes, reason_http_status, error_response)
        self.agents = agents

    async def _assistant_for(self, model: str) -> Any:
        """The assistant `model` names, when it names no LLM model (an LLM model's name wins)."""
        if self.agents is None:
            return None
        if not model.startswith(ASSISTANT_PREFIX) and self.llm.registry.snapshot.model(model) is not None:
            return None
        return await self.agents.by_model(model)

    # -- chat ----------------------------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        data = await self.body(request)
        generate = chat_request(data)
        assistant = await self._assistant_for(generate.model_id)
        if assistant is not None:
            caller.check_key_resource("assistant", assistant.id)  # also when named by name, not "assistant:<id>"
            return await self._agent(assistant, generate, data)
        if caller.current().restriction is not None:  # a published assistant's key: no bare models
            caller.check_key_resource("model", generate.model_id)
        if not data.get("stream"):
            return await self._whole(generate)
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        stream = self.llm.generate(generate)
        try:
            first = await anext(stream)  # failures before the first token become a plain HTTP error
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        name = self.model_name(first.served_model_id if first else "", generate.model_id)
        return EventStream(self._chunks(stream, first, name, include_usage), SSE_HEADERS)

    async def _whole(self, generate: llm_pb2.GenerateRequest) -> Response:
        complete = llm_pb2.CompleteRequest()
        complete.ParseFromString(generate.SerializeToString())  # the same fields, by number
        answer = await self.llm.complete(complete)
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
        if answer.reasoning_text:
            message["reasoning_content"] = answer.reasoning_text
        if answer.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in answer.tool_calls
            ]
        elif message["content"] is None:
            message["content"] = ""
        return JSONResponse(
            {
                "id": f"chatcmpl-{time.time_ns():x}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name(answer.served_model_id, generate.model_id),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": FINISH.get(answer.finish_reason, "stop"),
                    }
                ],
                "usage": _usage(answer.usage),
            }
        )

    async def _chunks(
        self, stream: AsyncGenerator[llm_pb2.GenerateResponse, None], first, model: str, include_usage: bool
    ) -> AsyncIterator[str]:
        head = (
            f'{{"id":"chatcmpl-{time.time_ns():x}","object":"chat.completion.chunk","created":{int(time.time())},'
            f'"model":{dumps(model)},"system_fingerprint":null,"choices":'
        )
        # The role chunk goes out with the first token's, in one write: the first token is already here.
        role = f'data: {head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'
        try:
            message = first
            while message is not None:
                delta: dict[str, Any] = {}
                if message.text:
                    delta["content"] = message.text
                if message.reasoning_text:
                    delta["reasoning_content"] = message.reasoning_text
                if message.tool_calls:
                    delta["tool_calls"] = _tool_call_chunks(message.tool_calls)
                out = role
                role = ""
                if delta:
                    out += f'data: {head}[{{"index":0,"delta":{dumps(delta)},"finish_reason":null}}]}}\n\n'
                if message.finish_reason:
                    finish = FINISH.get(message.finish_reason, "stop")
                    out += f'data: {head}[{{"index":0,"delta":{{}},"finish_reason":"{finish}"}}]}}\n\n'
                    if include_usage:
                        out += f'data: {head}[],"usage":{dumps(_usage(message.usage))}}}\n\n'
                    yield out
                    break
                if out:
                    yield out
                message = await anext(stream, None)
            yield role + "data: [DONE]\n\n"
        except TypecaseError as error:  # mid-stream: the status line is long gone; OpenAI's in-band error
            yield role + f"data: {dumps(error_body(error, status_of(error, self.reason_http_status)))}\n\n"
        finally:
            await stream.aclose()  # client gone: closes the upstream call at once

    # -- assistants ----------------------------------------------------------------------------------------------
    async def _agent(self, assistant, generate: llm_pb2.GenerateRequest, data: dict[str, Any]) -> Response:
        """An assistant answering: its tool steps run here; the client gets the answer's text (streamed or
        whole) with finish_reason "length" when the assistant ran out of steps."""
        if generate.tools:
            raise invalid_argument("tools", "an assistant brings its own tools; send none")
        if generate.HasField("response_format"):
            raise invalid_argument("response_format", "is not supported with an assistant")
        assert self.agents is not None  # reached only for an assistant found through it
        events = self.agents.run(assistant, list(generate.messages), generate.config, generate.user)
        model = generate.model_id
        if not data.get("stream"):
            text, finished = [], None
            async for event in events:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, Finished):
                    finished = event
            content = "".join(text) + (f"\n\n{finished.notice}" if finished and finished.notice else "")
            return JSONResponse(
                {
                    "id": f"chatcmpl-{time.time_ns():x}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content, "refusal": None},
                            "logprobs": None,
                            "finish_reason": AGENT_FINISH.get(finished.finish_reason, "stop") if finished else "stop",
                        }
                    ],
                    "usage": _usage(finished.usage if finished else common_pb2.Usage()),
                }
            )
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        try:
            first = await anext(events)  # failures before the first event (a tool the caller may not call, ...)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await events.aclose()
            raise
        chunks = self._agent_chunks(events, first, model, include_usage, caller.current())
        return EventStream(chunks, SSE_HEADERS)

    async def _agent_chunks(self, events, first, model: str, include_usage: bool, principal) -> AsyncIterator[str]:
        """The answer's chunks. The body is sent after the handler returned (and unbound the caller), so the
        caller is bound again here: the tools still run with the caller's rights."""
        bound = caller.bind(principal)
        head = (
            f'{{"id":"chatcmpl-{time.time_ns():x}","object":"chat.completion.chunk","created":{int(time.time())},'
            f'"model":{dumps(model)},"system_fingerprint":null,"choices":'
        )
        try:
            yield f'data: {head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'
            event = first
            while event is not None:
                if isinstance(event, TextDelta) and event.text:
                    yield f'data: {head}[{{"index":0,"delta":{dumps({"content": event.text})},"finish_reason":null}}]}}\n\n'
                elif isinstance(event, Finished):
                    if event.notice:
                        delta = dumps({"content": "\n\n" + event.notice})
                        yield f'data: {head}[{{"index":0,"delta":{delta},"finish_reason":null}}]}}\n\n'
                    finish = AGENT_FINISH.get(event.finish_reason, "stop")
                    yield f'data: {head}[{{"index":0,"delta":{{}},"finish_reason":"{finish}"}}]}}\n\n'
                    if include_usage:
                        yield f'data: {head}[],"usage":{dumps(_usage(event.usage))}}}\n\n'
                    break
                event = await anext(events, None)
            yield "data: [DONE]\n\n"
        except TypecaseError as error:
            yield f"data: {dumps(error_body(error, status_of(error, self.reason_http_status)))}\n\n"
        finally:
            await events.aclose()  # client gone: cancels the model call or the tool batch in flight
            with contextlib.suppress(ValueError):  # closed from another context (garbage collection)
                caller.bind_reset(bound)

    # -- embeddings ----------------------------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        data = await self.body(request)
        unknown_fields(data, EMBEDDING_FIELDS)
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise invalid_argument("model", "required")
        inputs = data.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs) or not inputs:
            raise invalid_argument("input", "must be a string or a non-empty list of strings")
        encoding = data.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise invalid_argument("encoding_format", "must be float or base64")
        dimensions = int(data.get("dimensions") or 0)
        await self.llm.check_access(model, "knowledge_embedding", "embedding")
        served, vectors, tokens = await self.llm.inference.embed(model, inputs, dimensions=dimensions)
        items = []
        for i, vector in enumerate(vectors):
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            items.append({"object": "embedding", "index": i, "embedding": value})
        return JSONResponse(
            {
                "object": "list",
                "data": items,
                "model": served.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- models --------------------------------------------------------------------------------------------------
    def _model_entry(self, model) -> dict[str, Any]:
        provider = self.llm.registry.snapshot.providers.get(model.provider_id)
        return {
            "id": model.name,
            "object": "model",
            "created": int(model.create_time.timestamp()),
            "owned_by": provider.name if provider else "typecase",
        }

    async def list_models(self, request: Request) -> Response:
        snapshot = self.llm.registry.snapshot
        online = sorted((m for m in snapshot.models.values() if m.online), key=lambda m: m.name)
        models = await self.llm.usable_models(online)  # restricted models only for those granted them
        data = [self._model_entry(m) for m in models]
        if self.agents is not None:  # the assistants the caller may chat with, as "assistant:<id>"
            data += [
                {
                    "id": ASSISTANT_PREFIX + a.id,
                    "object": "model",
                    "created": a.create_time.seconds,
                    "owned_by": "typecase-assistant",
                }
                for a in await self.agents.listed()
            ]
        return JSONResponse({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        ref = request.path_params["model"]
        model = self.llm.registry.snapshot.model(ref)
        if model is None or not model.online or not await self.llm.usable_models([model]):
            raise TypecaseError(
                grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", f"model {ref!r} not found", {"model_id": ref}
            )
        return JSONResponse(self._model_entry(model))

    def routes(self) -> list[Route]:
        def route(path: str, handler, methods: list[str]) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self.call(request, handler)

            return Route(PREFIX + path, endpoint, methods=methods)

        return [
            route("/chat/completions", self.chat_completions, ["POST"]),
            route("/embeddings", self.embeddings, ["POST"]),
            route("/models", self.list_models, ["GET"]),
            route("/models/{model:path}", self.get_model, ["GET"]),
        ]


def openai_routes(
    llm,
    auth: CallerAuth,
    max_body_bytes: int = 4 * 1024 * 1024,
    reason_http_status: Mapping[str, int] | None = None,
    agents: AgentModels | None = None,
) -> list[Route]:
    return OpenAICompat(llm, auth, max_body_bytes, reason_http_status or {}, agents).routes()
