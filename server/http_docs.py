"""OpenAPI for what the transcoder does not generate: the bearer key, the hand-routed compatibility surfaces
(/openai/v1, /anthropic/v1) and the operations endpoints (/healthz, /readyz, /metrics, /favicon.ico).

The gateway documents every transcoded route from the protos; these routes have no proto, so their path items are
written here, once, and merged into the same /openapi.json (GatewayOptions.openapi_paths) so that the document,
/docs and the README's "every route is listed" agree. The examples are the bodies the README's curl lines send.
"""

from __future__ import annotations

from typing import Any

from typecase.server.llm.registry import LOCAL_CHAT, LOCAL_EMBEDDING

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "A Typecase API key (the admin key is in the data dir's admin_api_key file, or "
        "TYPECASE_ADMIN_API_KEY), or an access token from POST /v1/auth:login.",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The same key as x-api-key (what the Anthropic SDK sends); /openai and /anthropic only.",
    },
}
PUBLIC: list[dict[str, list[str]]] = []  # `security: []`: no credential needed


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _ok(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if content:
        response["content"] = content
    return response


OBJECT = {"type": "object", "additionalProperties": True}
VENDOR_ERROR = {
    "description": 'An error in the vendor\'s shape: {"error": {"message", "type", "param", '
    '"code"}} (OpenAI) or {"type": "error", "error": {...}} (Anthropic).',
    "content": _json(OBJECT),
}


def _ops() -> dict[str, dict[str, Any]]:
    def op(op_id: str, summary: str, description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "get": {
                "operationId": op_id,
                "tags": ["Operations"],
                "summary": summary,
                "description": description,
                "security": PUBLIC,
                "responses": {"200": _ok("Success.", content)},
            }
        }

    return {
        "/healthz": op(
            "Ops_Healthz",
            "Says the process is up.",
            "Liveness: answers while the event loop runs.",
            _json(OBJECT, {"status": "ok"}),
        ),
        "/readyz": op(
            "Ops_Readyz",
            "Says whether the server is ready to serve.",
            "Readiness: 200 when every resource (database, cache, storage, vectors) is healthy, 503 "
            "otherwise, with each resource's state and the code sandbox's verdict.",
            _json(
                OBJECT, {"status": "ready", "serving": True, "resources": {"sql/sqlite": {"ok": True, "detail": "..."}}}
            ),
        ),
        "/metrics": op(
            "Ops_Metrics",
            "Serves Prometheus metrics.",
            "grpc_server_handled_total, grpc_server_handling_seconds, token, time-to-first-token and "
            "job metrics in the Prometheus text format.",
            {"text/plain": {"schema": {"type": "string"}}},
        ),
    }


def _openai() -> dict[str, dict[str, Any]]:
    tags, errors = ["OpenAI-compatible"], {"default": VENDOR_ERROR}
    chat_example = {
        "model": LOCAL_CHAT,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello!"}],
        "max_tokens": 40,
        "stream": False,
    }
    return {
        "/openai/v1/chat/completions": {
            "post": {
                "operationId": "OpenAI_ChatCompletions",
                "tags": tags,
                "summary": "Generates a chat completion in OpenAI's format, whole or streamed.",
                "description": "OpenAI's request and response shapes (tools, response_format, image_url parts); "
                "`stream: true` answers Server-Sent Events chunks ending with `data: [DONE]`. A field "
                "Typecase does not support is a 400 naming it. Point any OpenAI SDK at "
                "base_url=http://HOST:8080/openai/v1 with a Typecase key.",
                "requestBody": {"required": True, "content": _json(OBJECT, chat_example)},
                "responses": {
                    "200": _ok(
                        "A chat.completion object, or chat.completion.chunk events when streamed.",
                        {**_json(OBJECT), "text/event-stream": {"schema": {"type": "string"}}},
                    ),
                    **errors,
                },
            }
        },
        "/openai/v1/embeddings": {
            "post": {
                "operationId": "OpenAI_Embeddings",
                "tags": tags,
                "summary": "Embeds one text or a list of texts in OpenAI's format.",
                "requestBody": {
                    "required": True,
                    "content": _json(OBJECT, {"model": LOCAL_EMBEDDING, "input": ["Hello!"]}),
                },
                "responses": {"200": _ok("A list of embedding objects with usage.", _json(OBJECT)), **errors},
            }
        },
        "/openai/v1/models": {
            "get": {
                "operationId": "OpenAI_ListModels",
                "tags": tags,
                "summary": "Lists the models the caller may use, in OpenAI's format.",
                "responses": {"200": _ok("A list of model objects.", _json(OBJECT)), **errors},
            }
        },
        "/openai/v1/models/{model}": {
            "get": {
                "operationId": "OpenAI_GetModel",
                "tags": tags,
                "summary": "Gets one model in OpenAI's format.",
                "parameters": [
                    {
                        "name": "model",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The model's name or id.",
                    }
                ],
                "responses": {"200": _ok("A model object.", _json(OBJECT)), **errors},
            }
        },
    }


def _anthropic() -> dict[str, dict[str, Any]]:
    example = {
        "model": LOCAL_CHAT,
        "max_tokens": 40,
        "system": "Answer briefly.",
        "messages": [{"role": "user", "content": "Hello!"}],
    }
    return {
        "/anthropic/v1/messages": {
            "post": {
                "operationId": "Anthropic_Messages",
                "tags": ["Anthropic-compatible"],
                "summary": "Creates a message in Anthropic's Messages format, whole or streamed.",
                "description": "Anthropic's request and response shapes (system, tools, tool_use and tool_result blocks, "
                "images); `stream: true` answers Anthropic's Server-Sent Events. Use the anthropic SDK "
                "with base_url=http://HOST:8080/anthropic.",
                "requestBody": {"required": True, "content": _json(OBJECT, example)},
                "responses": {
                    "200": _ok(
                        "A message object, or message events when streamed.",
                        {**_json(OBJECT), "text/event-stream": {"schema": {"type": "string"}}},
                    ),
                    "default": VENDOR_ERROR,
                },
            }
        }
    }


def extra_paths() -> dict[str, dict[str, Any]]:
    """OpenAPI path items of the routes served beside the transcoded API."""
    return {**_openai(), **_anthropic(), **_ops()}
