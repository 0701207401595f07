"""OpenAPI providers: each operation of an OpenAPI 3.0/3.1 document is a tool (openapi_doc.py builds them); a call
is one HTTP request through the http nodes' SSRF-guarded client (resolved, checked and pinned on every hop),
authenticated with the provider's key (header or query) or bearer token and its extra headers."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx

from typecase.server.infra.ssrf import Blocked
from typecase.server.tools.deps import GuardedHttp
from typecase.server.tools.errors import ToolFailure
from typecase.server.tools.kinds import openapi_doc
from typecase.server.tools.kinds.base import Call, Provider, ToolResult, ToolSpec

MASK = "****"
MAX_ERROR_BODY = 1000  # characters of an error response quoted in TOOL_FAILED


class OpenApiKind:
    name = "openapi"

    def __init__(self, settings, guard: GuardedHttp):
        self.settings = settings
        self.guard = guard

    async def _document_text(self, provider: Provider) -> str:
        text = provider.config.get("document") or ""
        if text:
            return text
        url = provider.config.get("document_url") or ""
        if not url:
            raise ToolFailure(
                "the document was given as text: update the provider with the new document to reload its operations"
            )
        try:
            reply = await self.guard.request(
                "GET",
                url,
                headers=dict(provider.headers),
                params={},
                content=None,
                json_body=None,
                timeout=self.settings.tools_connect_timeout_seconds,
                max_bytes=self.settings.tools_max_document_bytes,
            )
        except Blocked as exc:
            raise ToolFailure(f"document_url refused: {exc}") from None
        except (httpx.HTTPError, ConnectionError, ValueError) as exc:
            raise ToolFailure(f"cannot fetch the document: {exc}", unreachable=True) from None
        if reply.status_code >= 400:
            raise ToolFailure(f"fetching the document answered HTTP {reply.status_code}", unreachable=True)
        return reply.content.decode(reply.encoding or "utf-8", errors="replace")

    async def load(self, provider: Provider) -> list[ToolSpec]:
        text = await self._document_text(provider)

        def build() -> list[ToolSpec]:
            document = openapi_doc.parse(text)
            return openapi_doc.operations(
                document,
                provider.config.get("document_url", ""),
                provider.name[:64],
                self.settings.tools_max_per_provider,
            )

        try:
            return await asyncio.to_thread(build)
        except openapi_doc.DocumentError as exc:
            raise ToolFailure(str(exc)) from None

    async def call(self, call: Call) -> ToolResult:
        """The operation's request; the provider's credential is masked in whatever comes back (an error body or
        an echoing service must not hand the key to people who may call the tool but not read its secrets)."""
        secret = call.provider.credential
        try:
            result = await self._call(call)
        except ToolFailure as failure:
            if secret and secret in failure.message:
                raise ToolFailure(failure.message.replace(secret, MASK), unreachable=failure.unreachable) from None
            raise
        if secret and secret in result.text:
            result.text = result.text.replace(secret, MASK)
            if result.structured is not None:
                result.structured = json.loads(json.dumps(result.structured).replace(json.dumps(secret)[1:-1], MASK))
        return result

    async def _call(self, call: Call) -> ToolResult:
        binding, provider, args = call.binding, call.provider, call.arguments
        base = (provider.config.get("base_url") or binding.get("base_url") or "").rstrip("/")
        if not base:
            raise ToolFailure("the provider has no base URL (the document names no server): set openapi.base_url")
        path = str(binding["path"])
        headers = dict(provider.headers)
        query: dict[str, str] = {}
        body: Any = None
        for param in binding.get("params") or []:
            if param["prop"] not in args:
                continue
            value = args[param["prop"]]
            if param["in"] == "body":
                body = value
            elif param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", quote(_scalar(value), safe=""))
            elif param["in"] == "query":
                query[param["name"]] = _scalar(value)
            elif param["in"] == "header":
                headers[param["name"]] = _scalar(value)
        auth, credential = provider.config.get("auth_type", "none"), provider.credential
        if auth == "api_key_header":
            headers[provider.config["auth_name"]] = credential
        elif auth == "api_key_query":
            query[provider.config["auth_name"]] = credential
        elif auth == "bearer":
            headers["Authorization"] = f"Bearer {credential}"
        content, json_body = None, None
        if body is not None:
            if "json" in (binding.get("content_type") or "json"):
                json_body = body
            else:
                content = (body if isinstance(body, str) else json.dumps(body)).encode()
                headers.setdefault("Content-Type", binding["content_type"])
        try:
            reply = await self.guard.request(
                binding["method"],
                base + path,
                headers=headers,
                params=query,
                content=content,
                json_body=json_body,
                timeout=call.timeout,
                max_bytes=self.settings.tools_max_result_bytes,
            )
        except Blocked as exc:
            raise ToolFailure(f"refused: {exc}") from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except (httpx.HTTPError, ConnectionError, ValueError) as exc:
            raise ToolFailure(f"the service cannot be reached: {exc}", unreachable=True) from None
        text = reply.content.decode(reply.encoding or "utf-8", errors="replace")
        if reply.status_code >= 400:
            raise ToolFailure(f"HTTP {reply.status_code}: {text[:MAX_ERROR_BODY]}")
        structured = None
        if text[:1] in ("{", "["):
            try:
                structured = json.loads(text)
            except ValueError:
                structured = None
        return ToolResult(text, structured)

    async def forget(self, provider_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
