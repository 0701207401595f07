"""Typecase's own tools, seeded at start under the provider "builtin" (shared, owned by no one):

  current_time      the time now, in a timezone
  http_request      an HTTP request through the flow http node's SSRF-guarded client (the same object)
  knowledge_search  the caller's knowledge bases, with the caller's rights
  run_python        Python in the server's sandbox (the one code nodes use); refused when there is none

Published flows are tools too ("flow-<flow_id>"), but they are listed live from the flow domain, not seeded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from typecase.server.infra.ssrf import Blocked
from typecase.server.rpc.errors import TypecaseError
from typecase.server.sandbox import Limits, Sandbox, SandboxError
from typecase.server.tools.deps import GuardedHttp, KnowledgeSearch
from typecase.server.tools.errors import ToolFailure
from typecase.server.tools.kinds.base import Call, Provider, ToolResult, ToolSpec

PROVIDER_ID = "builtin"
PROVIDER_NAME = "Typecase"

SPECS = (
    ToolSpec(
        "current_time",
        "The current date and time (ISO 8601) in a timezone (IANA name, default UTC).",
        {
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "e.g. Europe/Paris"}},
            "additionalProperties": False,
        },
        "utility",
    ),
    ToolSpec(
        "http_request",
        "Send an HTTP request to a public URL and return the status and the body.",
        {
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "http(s) URL"},
                "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "query": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"description": "a string, or JSON to send as application/json"},
            },
            "required": ["url"],
            "additionalProperties": False,
        },
        "web",
    ),
    ToolSpec(
        "knowledge_search",
        "Search the caller's knowledge bases; returns the most relevant passages.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1},
                "knowledge_base_ids": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": 20,
                    "description": "ids of the bases to search",
                },
                "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
            },
            "required": ["query", "knowledge_base_ids"],
            "additionalProperties": False,
        },
        "knowledge",
    ),
    ToolSpec(
        "run_python",
        "Run Python code in a sandbox. The code defines main(**inputs) returning a dict.",
        {
            "type": "object",
            "properties": {"code": {"type": "string", "minLength": 1}, "inputs": {"type": "object"}},
            "required": ["code"],
            "additionalProperties": False,
        },
        "code",
    ),
)


def tool_id(name: str) -> str:
    return f"{PROVIDER_ID}-{name}"


@dataclass
class BuiltinDeps:
    settings: Any
    http: GuardedHttp | None = None
    knowledge: KnowledgeSearch | None = None
    sandbox: Sandbox | None = None


class BuiltinKind:
    name = "builtin"

    def __init__(self, deps: BuiltinDeps):
        self.deps = deps
        self._calls = {
            "current_time": self._current_time,
            "http_request": self._http_request,
            "knowledge_search": self._knowledge_search,
            "run_python": self._run_python,
        }

    async def load(self, provider: Provider) -> list[ToolSpec]:
        return list(SPECS)

    async def call(self, call: Call) -> ToolResult:
        handler = self._calls.get(call.tool_name)
        if handler is None:
            raise ToolFailure(f"no built-in tool {call.tool_name!r}")
        try:
            return await handler(call)
        except TypecaseError as error:  # another domain's refusal (a base the caller may not read, ...)
            raise ToolFailure(error.message, unreachable=error.code.name == "UNAVAILABLE") from None

    async def forget(self, provider_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def _current_time(self, call: Call) -> ToolResult:
        zone = str(call.arguments.get("timezone") or "UTC")
        try:
            now = datetime.now(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolFailure(f"unknown timezone {zone!r}") from None
        return ToolResult(now.isoformat(), {"time": now.isoformat(), "timezone": zone, "unix": now.timestamp()})

    async def _http_request(self, call: Call) -> ToolResult:
        if self.deps.http is None:
            raise ToolFailure("http requests are not available on this server")
        args = call.arguments
        body = args.get("body")
        content, json_body = (
            (None, body) if isinstance(body, (dict, list)) else ((None if body is None else str(body).encode()), None)
        )
        try:
            reply = await self.deps.http.request(
                str(args.get("method") or "GET"),
                str(args["url"]),
                headers=dict(args.get("headers") or {}),
                params=dict(args.get("query") or {}),
                content=content,
                json_body=json_body,
                timeout=call.timeout,
                max_bytes=self.deps.settings.tools_max_result_bytes,
            )
        except Blocked as exc:
            raise ToolFailure(f"request refused: {exc}") from None
        except (httpx.HTTPError, ConnectionError, ValueError) as exc:
            raise ToolFailure(f"request failed: {exc}", unreachable=True) from None
        text = reply.content.decode(reply.encoding or "utf-8", errors="replace")
        parsed = None
        if text[:1] in ("{", "["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        return ToolResult(
            text,
            {"status_code": reply.status_code, "json": parsed}
            if parsed is not None
            else {"status_code": reply.status_code},
        )

    async def _knowledge_search(self, call: Call) -> ToolResult:
        if self.deps.knowledge is None:
            raise ToolFailure("knowledge search is not available on this server")
        args = call.arguments
        hits = await self.deps.knowledge.search(
            str(args["query"]), [str(i) for i in args.get("knowledge_base_ids") or []], int(args.get("top_k") or 5)
        )
        passages = [
            {"text": h.text, "score": h.score, "knowledge_base_id": h.kb_id, "file_name": h.file_name} for h in hits
        ]
        text = "\n\n".join(f"[{i + 1}] {h.text}" for i, h in enumerate(hits)) or "no results"
        return ToolResult(text, {"results": passages})

    async def _run_python(self, call: Call) -> ToolResult:
        sandbox, settings = self.deps.sandbox, self.deps.settings
        if sandbox is None or not sandbox.available:
            reason = sandbox.refusal if sandbox is not None else "no sandbox was configured"
            raise ToolFailure(f"run_python is refused: there is no working sandbox ({reason})")
        limits = Limits(
            wall_seconds=call.timeout,
            cpu_seconds=settings.flow_code_cpu_seconds,
            memory_bytes=settings.flow_code_memory_mb * 1024 * 1024,
            output_bytes=settings.tools_max_result_bytes,
            file_bytes=settings.flow_code_max_output_bytes,
        )
        try:
            result = await sandbox.run_python(
                str(call.arguments["code"]), dict(call.arguments.get("inputs") or {}), limits
            )
        except SandboxError as exc:
            raise ToolFailure(exc.message) from None
        return ToolResult(
            json.dumps(result.outputs, ensure_ascii=False, default=str),
            {"outputs": result.outputs, "stdout": result.stdout},
        )
