"""The OpenAI-compatible API under /openai/v1 (chat/completions, embeddings, models), so OpenAI SDKs work with
base_url=http://HOST:8080/openai/v1. Thin over LLMService's Python API; authenticated with Typecase API keys
(or access tokens) exactly like the gRPC surface.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.server.rpc.principal import Principal
from typecase.v1 import common_pb2, llm_pb2

log = logging.getLogger("typecase.llm")
PREFIX = "/openai/v1"
FINISH = {common_pb2.FINISH_REASON_STOP: "stop", common_pb2.FINISH_REASON_LENGTH: "length",
          common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter", common_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
          common_pb2.FINISH_REASON_CANCELLED: "stop", common_pb2.FINISH_REASON_ERROR: "stop"}
ROLES = {"system": common_pb2.MESSAGE_ROLE_SYSTEM, "developer": common_pb2.MESSAGE_ROLE_SYSTEM,
         "user": common_pb2.MESSAGE_ROLE_USER, "assistant": common_pb2.MESSAGE_ROLE_ASSISTANT,
         "tool": common_pb2.MESSAGE_ROLE_TOOL}
# grpc-gateway's code -> HTTP status table, and OpenAI's error "type" for each.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "invalid_request_error"),
}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def error_response(error: TypecaseError) -> JSONResponse:
    status, kind = HTTP_STATUS.get(error.code, (500, "api_error"))
    headers = {"retry-after": str(max(1, round(error.retry_after)))} if error.retry_after else None
    body = {"error": {"message": error.message, "type": kind, "param": error.metadata.get("field"),
                      "code": error.reason.lower()}}
    return JSONResponse(body, status_code=status, headers=headers)


async def authenticate(auth, request: Request) -> Principal:
    """The caller behind `authorization: Bearer <API key or access token>`, with the failure budgets and rate
    limits — the same check the gRPC auth interceptor applies (request.client is resolved by uvicorn from the
    trusted proxies' X-Forwarded-For)."""
    header = request.headers.get("authorization")
    client = request.client.host if request.client else "unknown"
    return await auth.guard.principal([("authorization", header)] if header else [], client, request.url.path)


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TypecaseError(grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE",
                                f"request body exceeds {limit} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise invalid_argument("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid_argument("body", "must be a JSON object")
    return data


def _content(value: Any, field: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):  # content parts: only text is supported
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid_argument(field, "only text content parts are supported")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise invalid_argument(field, "must be a string or a list of text parts")


def chat_request(data: dict[str, Any]) -> llm_pb2.GenerateRequest:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_argument("model", "required")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_argument("messages", "must be a non-empty list")
    if data.get("n") not in (None, 1):
        raise invalid_argument("n", "only n=1 is supported")
    request = llm_pb2.GenerateRequest(model_id=model, user=str(data.get("user") or ""))
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise invalid_argument(f"messages[{i}].role", "must be system, developer, user, assistant or tool")
        request.messages.add(role=ROLES[m["role"]], content=_content(m.get("content"), f"messages[{i}].content"),
                             name=str(m.get("name") or ""), tool_call_id=str(m.get("tool_call_id") or ""))
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
    return request


class OpenAICompat:
    def __init__(self, llm, auth, max_body_bytes: int):
        self.llm = llm
        self.auth = auth
        self.max_body_bytes = max_body_bytes

    async def _call(self, request: Request, handler) -> Response:
        try:
            principal = await authenticate(self.auth, request)
            token = caller.bind(principal)
            try:
                return await handler(request)
            finally:
                caller.bind_reset(token)
        except TypecaseError as error:
            return error_response(error)
        except Exception:
            log.exception("unhandled error in %s", request.url.path)
            return error_response(TypecaseError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))

    # -- chat ----------------------------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        data = await _json_body(request, self.max_body_bytes)
        generate = chat_request(data)
        if not data.get("stream"):
            complete = llm_pb2.CompleteRequest(model_id=generate.model_id, messages=generate.messages,
                                               config=generate.config, user=generate.user)
            answer = await self.llm.complete(complete)
            name = self._model_name(answer.served_model_id, generate.model_id)
            message: dict[str, Any] = {"role": "assistant", "content": answer.text}
            if answer.reasoning_text:
                message["reasoning_content"] = answer.reasoning_text
            return JSONResponse({
                "id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion", "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": FINISH.get(answer.finish_reason, "stop")}],
                "usage": _usage(answer.usage),
            })
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        stream = self.llm.generate(generate)
        try:
            first = await anext(stream)  # failures before the first token become a plain HTTP error
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        name = self._model_name(first.served_model_id if first else "", generate.model_id)
        return StreamingResponse(self._chunks(stream, first, name, include_usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    async def _chunks(self, stream: AsyncIterator[llm_pb2.GenerateResponse], first, model: str,
                      include_usage: bool) -> AsyncIterator[str]:
        head = f'{{"id":"chatcmpl-{time.time_ns():x}","object":"chat.completion.chunk","created":{int(time.time())},' \
               f'"model":{_dumps(model)},"system_fingerprint":null,"choices":'
        try:
            yield f'data: {head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'
            message = first
            while message is not None:
                delta: dict[str, str] = {}
                if message.text:
                    delta["content"] = message.text
                if message.reasoning_text:
                    delta["reasoning_content"] = message.reasoning_text
                if delta:
                    yield f'data: {head}[{{"index":0,"delta":{_dumps(delta)},"finish_reason":null}}]}}\n\n'
                if message.finish_reason:
                    finish = FINISH.get(message.finish_reason, "stop")
                    yield f'data: {head}[{{"index":0,"delta":{{}},"finish_reason":"{finish}"}}]}}\n\n'
                    if include_usage:
                        yield f'data: {head}[],"usage":{_dumps(_usage(message.usage))}}}\n\n'
                    break
                message = await anext(stream, None)
            yield "data: [DONE]\n\n"
        except TypecaseError as error:  # mid-stream: the status line is long gone; OpenAI's in-band error
            status, kind = HTTP_STATUS.get(error.code, (500, "api_error"))
            yield f'data: {_dumps({"error": {"message": error.message, "type": kind, "code": error.reason.lower()}})}\n\n'
        finally:
            await stream.aclose()  # client gone: closes the upstream call at once

    def _model_name(self, served_id: str, requested: str) -> str:
        model = self.llm.registry.snapshot.model(served_id or requested)
        return model.name if model else requested

    # -- embeddings ----------------------------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        data = await _json_body(request, self.max_body_bytes)
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
        served, vectors, tokens = await self.llm.inference.embed(model, inputs, dimensions=dimensions)
        items = []
        for i, vector in enumerate(vectors):
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            items.append({"object": "embedding", "index": i, "embedding": value})
        return JSONResponse({"object": "list", "data": items, "model": served.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # -- models --------------------------------------------------------------------------------------------------
    def _model_entry(self, model) -> dict[str, Any]:
        provider = self.llm.registry.snapshot.providers.get(model.provider_id)
        return {"id": model.name, "object": "model", "created": int(model.create_time.timestamp()),
                "owned_by": provider.name if provider else "typecase"}

    async def list_models(self, request: Request) -> Response:
        snapshot = self.llm.registry.snapshot
        models = sorted((m for m in snapshot.models.values() if m.online), key=lambda m: m.name)
        return JSONResponse({"object": "list", "data": [self._model_entry(m) for m in models]})

    async def get_model(self, request: Request) -> Response:
        ref = request.path_params["model"]
        model = self.llm.registry.snapshot.model(ref)
        if model is None or not model.online:
            raise TypecaseError(grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", f"model {ref!r} not found",
                                {"model_id": ref})
        return JSONResponse(self._model_entry(model))

    def routes(self) -> list[Route]:
        def route(path: str, handler, methods: list[str]) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._call(request, handler)
            return Route(PREFIX + path, endpoint, methods=methods)

        return [
            route("/chat/completions", self.chat_completions, ["POST"]),
            route("/embeddings", self.embeddings, ["POST"]),
            route("/models", self.list_models, ["GET"]),
            route("/models/{model:path}", self.get_model, ["GET"]),
        ]


def _usage(usage: common_pb2.Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def openai_routes(llm, auth, max_body_bytes: int = 4 * 1024 * 1024) -> list[Route]:
    return OpenAICompat(llm, auth, max_body_bytes).routes()
