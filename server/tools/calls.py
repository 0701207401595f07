"""Calling one tool: find it (with the caller's rights), validate the arguments against its schema, run it under
its timeout, cap its result, count it. The RPC, the Python API for chat and flow, and the MCP server all call
tools through `Invoker.call`, so they cannot disagree on the rules."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache, TTLCache

from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError
from typecase.server.tools import schemas
from typecase.server.tools.convert import provider_view
from typecase.server.tools.deps import FlowRunner, SecretBox
from typecase.server.tools.errors import ToolFailure, arguments_invalid, tool_failed, tool_not_found, tool_timeout
from typecase.server.tools.kinds.base import Call, Kind, Provider, ToolResult
from typecase.server.tools.metrics import TOOL_CALLS, TOOL_SECONDS
from typecase.server.tools.models import ToolProviderRow, ToolRow
from typecase.server.tools.store import ToolStore

FLOW_PREFIX = "flow-"
LOOKUP_CACHE_SIZE = 4096
FLOW_CATEGORY = "flow"


@dataclass
class Resolved:
    """A tool the caller may call."""

    id: str
    name: str
    description: str
    category: str
    parameters: dict[str, Any]
    kind: str
    provider_id: str
    provider_name: str
    binding: dict[str, Any]
    provider_row: ToolProviderRow | None = None  # None for flow tools


@dataclass
class Outcome:
    text: str
    structured: Any
    truncated: bool
    seconds: float


def cap_text(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode(errors="ignore"), True


class Invoker:
    def __init__(
        self, settings, store: ToolStore, kinds: dict[str, Kind], box: SecretBox, flows: FlowRunner | None = None
    ):
        self.settings = settings
        self.store = store
        self.kinds = kinds
        self.box = box
        self.flows = flows
        # Tool and provider rows by tool id: the SQL lookup is most of what a call adds (~2 ms of ~2.5 on SQLite,
        # measured in bench/tools), so a replica keeps rows for tools_lookup_cache_seconds. Local changes clear it.
        ttl = settings.tools_lookup_cache_seconds
        self._rows: TTLCache[str, tuple[ToolRow, ToolProviderRow]] | None = (
            TTLCache(maxsize=LOOKUP_CACHE_SIZE, ttl=ttl) if ttl > 0 else None
        )
        # Providers with their secrets opened, keyed by the row's id, sealed secrets and update time: a new key, a
        # changed config or an update on any replica is a new entry, so a stale credential is never used. Saves
        # the decryption and JSON parse of every call (~50 us, bench/tools).
        self._views: LRUCache[tuple[Any, ...], Provider] = LRUCache(maxsize=LOOKUP_CACHE_SIZE)

    def forget(self) -> None:
        """A provider changed on this replica: drop every cached lookup."""
        if self._rows is not None:
            self._rows.clear()
        self._views.clear()

    def _provider(self, row: ToolProviderRow) -> Provider:
        key = (row.id, row.secrets_encrypted, row.update_time, row.name)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = provider_view(self.box, row)
        return view

    async def _lookup(self, tool_id: str) -> tuple[ToolRow, ToolProviderRow] | None:
        if self._rows is not None and (hit := self._rows.get(tool_id)) is not None:
            return hit
        found = await self.store.tool(tool_id)
        if found is not None and self._rows is not None:
            self._rows[tool_id] = found
        return found

    async def resolve(self, tool_id: str) -> Resolved:
        """The tool, or TOOL_NOT_FOUND when it does not exist or the caller may not see it."""
        if tool_id.startswith(FLOW_PREFIX):
            if self.flows is None:
                raise tool_not_found(tool_id)
            try:
                flow = await self.flows.flow(tool_id[len(FLOW_PREFIX) :])
            except TypecaseError as exc:
                if exc.code.name == "NOT_FOUND" or exc.reason in ("NOT_FOUND", "FLOW_NOT_PUBLISHED"):
                    raise tool_not_found(tool_id) from None
                raise
            return flow_tool(flow)
        found = await self._lookup(tool_id)
        if found is None:
            raise tool_not_found(tool_id)
        tool, provider = found
        if not (
            provider.shared or caller.can_see(provider.owner_id) or await self.store.granted(provider, caller.current())
        ):
            raise tool_not_found(tool_id)
        return resolved(tool, provider)

    def timeout(self, provider_ms: int, requested_ms: int) -> float:
        limit = self.settings.tools_max_call_timeout_seconds
        seconds = (requested_ms or provider_ms) / 1000 or self.settings.tools_call_timeout_seconds
        return min(seconds, limit)

    async def call(
        self, tool_id: str, arguments: dict[str, Any], timeout_ms: int = 0, cap_seconds: float | None = None
    ) -> Outcome:
        return await self.call_resolved(await self.resolve(tool_id), arguments, timeout_ms, cap_seconds)

    async def call_resolved(
        self, tool: Resolved, arguments: dict[str, Any], timeout_ms: int = 0, cap_seconds: float | None = None
    ) -> Outcome:
        """Validate and run one call. timeout_ms replaces the provider's timeout; cap_seconds (a batch's
        deadline) only ever shortens it."""
        started = time.perf_counter()
        outcome = "failed"
        try:
            if len(json.dumps(arguments, default=str)) > self.settings.tools_max_arguments_bytes:
                outcome = "invalid"
                raise arguments_invalid(tool.name, "$", f"larger than {self.settings.tools_max_arguments_bytes} bytes")
            problem = schemas.problem(tool.parameters, arguments)
            if problem is not None:
                outcome = "invalid"
                raise arguments_invalid(tool.name, *problem)
            timeout = self.timeout(tool.provider_row.timeout_ms if tool.provider_row else 0, timeout_ms)
            if cap_seconds is not None:
                timeout = max(min(timeout, cap_seconds), 0.001)
            try:
                async with asyncio.timeout(timeout):
                    result = await self._run(tool, arguments, timeout)
            except TimeoutError:
                outcome = "timeout"
                raise tool_timeout(tool.name, timeout) from None
            except ToolFailure as failure:
                raise tool_failed(tool.name, failure) from None
            text, truncated = cap_text(result.text, self.settings.tools_max_result_bytes)
            structured = result.structured
            if (
                structured is not None
                and len(json.dumps(structured, default=str, ensure_ascii=False).encode())
                > self.settings.tools_max_result_bytes
            ):
                structured, truncated = None, True  # a cut JSON value would mislead; the text stays
            outcome = "ok"
            return Outcome(text, structured, truncated, time.perf_counter() - started)
        finally:
            TOOL_CALLS.labels(tool.id, tool.kind, outcome).inc()
            TOOL_SECONDS.labels(tool.id, tool.kind).observe(time.perf_counter() - started)

    async def _run(self, tool: Resolved, arguments: dict[str, Any], timeout: float) -> ToolResult:
        if tool.provider_row is None:  # a flow
            assert self.flows is not None
            try:
                outputs = await self.flows.run(tool.binding["flow_id"], arguments)
            except TypecaseError as exc:
                if exc.code.name == "INVALID_ARGUMENT":
                    raise arguments_invalid(
                        tool.name, "$." + exc.metadata.get("field", "").removeprefix("inputs."), exc.message
                    ) from None
                raise ToolFailure(exc.message, unreachable=exc.code.name == "UNAVAILABLE") from None
            answer = outputs.get("answer")
            text = answer if isinstance(answer, str) else json.dumps(outputs, ensure_ascii=False, default=str)
            return ToolResult(text, outputs)
        provider = self._provider(tool.provider_row)
        kind = self.kinds[tool.kind]
        return await kind.call(Call(provider, tool.name, tool.binding, arguments, timeout, caller.current()))


def resolved(tool: ToolRow, provider: ToolProviderRow) -> Resolved:
    return Resolved(
        tool.id,
        tool.name,
        tool.description,
        tool.category,
        dict(tool.parameters or {}),
        provider.kind,
        provider.id,
        provider.name,
        dict(tool.binding or {}),
        provider,
    )


def flow_tool(flow) -> Resolved:
    return Resolved(
        FLOW_PREFIX + flow.id,
        flow.name,
        flow.description or f"Run the flow {flow.name!r}",
        FLOW_CATEGORY,
        flow.parameters or {"type": "object", "properties": {}},
        "flow",
        "builtin",
        "Typecase",
        {"flow_id": flow.id},
    )
