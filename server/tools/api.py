"""The tools domain's Python API for chat and flow (they receive a `ToolsApi` from app.py, never the servicer):

    declared = await tools.declare(["builtin-current_time", "flow-01J...", "01J..."])
    request.tools.extend(declared.tools)                       # llm.proto Tool declarations for Generate
    results = await tools.execute([ToolCall("c1", declared.tool_id(name), arguments_json), ...],
                                  deadline_seconds=60)

Both run under the caller's principal bound in the context (the chat session's or flow run's user), so a model
can only call what its user may call. `execute` runs the batch concurrently (at most tools_max_batch_calls at a
time), each call under its own timeout and the batch's deadline; one call failing is that call's result, not the
batch's; cancelling `execute` cancels every call still running."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from typecase.server.rpc.errors import TypecaseError
from typecase.server.tools.calls import Invoker, flow_tool
from typecase.server.tools.convert import struct_of
from typecase.v1 import llm_pb2

NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
SERVED_BUILTINS = ("builtin-knowledge_search",)
IDEMPOTENT_METHODS = {"GET", "HEAD", "OPTIONS"}
IDEMPOTENT_BUILTINS = {"builtin-current_time", "builtin-knowledge_search"}


@dataclass
class ToolCall:
    call_id: str
    tool_id: str
    arguments: dict[str, Any] | str  # a dict, or the JSON text a model produced
    timeout_seconds: float = 0  # 0: the tool's own timeout


@dataclass
class ToolCallResult:
    call_id: str
    tool_id: str
    ok: bool
    text: str = ""  # the result, or the error message (what the model is shown either way)
    structured: Any = None
    reason: str = ""  # TOOL_* reason when not ok
    seconds: float = 0.0


@dataclass
class Declarations:
    tools: list[llm_pb2.Tool]
    by_name: dict[str, str] = field(default_factory=dict)  # declared name -> tool id

    def tool_id(self, name: str) -> str:
        """The tool a model's call names; "" when it named no declared tool."""
        return self.by_name.get(name, "")


@dataclass
class Served:
    """A tool as Typecase serves it over MCP."""

    name: str  # model-safe and unique in the listing
    tool_id: str
    description: str
    parameters: dict[str, Any]


class ToolsApi(Protocol):
    async def declare(self, refs: Sequence[str]) -> Declarations: ...

    async def served(self) -> list[Served]: ...

    async def idempotent(self, tool_id: str) -> bool: ...

    async def execute(
        self, calls: Sequence[ToolCall], *, deadline_seconds: float | None = None
    ) -> list[ToolCallResult]: ...


def declared_name(name: str, taken: set[str]) -> str:
    """A model-safe (1-64 of [A-Za-z0-9_-]) name, unique among `taken`."""
    base = NAME_CHARS.sub("_", name).strip("_")[:64] or "tool"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        suffix = f"_{n}"
        candidate = base[: 64 - len(suffix)] + suffix
    return candidate


class Tools:
    """ToolsApi over the invoker the RPCs use."""

    def __init__(self, invoker: Invoker, max_batch_calls: int):
        self.invoker = invoker
        self.max_batch_calls = max_batch_calls

    async def declare(self, refs: Sequence[str]) -> Declarations:
        """Declarations of the given tools; TOOL_NOT_FOUND for one the caller may not call."""
        declared = Declarations([])
        for ref in dict.fromkeys(refs):
            tool = await self.invoker.resolve(ref)
            name = declared_name(tool.name, set(declared.by_name))
            declared.by_name[name] = tool.id
            declared.tools.append(
                llm_pb2.Tool(name=name, description=tool.description[:1024], parameters=struct_of(tool.parameters))
            )
        return declared

    async def idempotent(self, tool_id: str) -> bool:
        """Whether calling the tool twice is as good as once, so an interrupted call may simply be run again:
        OpenAPI GET/HEAD/OPTIONS operations and the read-only built-ins. MCP tools and flows are not assumed to be."""
        try:
            tool = await self.invoker.resolve(tool_id)
        except TypecaseError:
            return False
        if tool.kind == "openapi":
            return str(tool.binding.get("method", "")).upper() in IDEMPOTENT_METHODS
        return tool.id in IDEMPOTENT_BUILTINS

    async def served(self) -> list[Served]:
        """What Typecase serves over MCP to the caller: knowledge search over its bases, and the published flows
        it may run (at most tools_max_per_provider of them)."""
        tools = [await self.invoker.resolve(SERVED_BUILTINS[0])]
        if self.invoker.flows is not None:
            tools += [
                flow_tool(f)
                for f in await self.invoker.flows.runnable_flows(self.invoker.settings.tools_max_per_provider)
            ]
        served: list[Served] = []
        taken: set[str] = set()
        for tool in tools:
            name = declared_name(tool.name, taken)
            taken.add(name)
            served.append(Served(name, tool.id, tool.description, tool.parameters))
        return served

    async def execute(
        self, calls: Sequence[ToolCall], *, deadline_seconds: float | None = None
    ) -> list[ToolCallResult]:
        slots = asyncio.Semaphore(self.max_batch_calls)
        deadline = time.monotonic() + deadline_seconds if deadline_seconds else None

        async def one(call: ToolCall) -> ToolCallResult:
            started = time.monotonic()
            async with slots:
                try:
                    arguments = call.arguments
                    if isinstance(arguments, str):
                        try:
                            arguments = json.loads(arguments or "{}")
                        except ValueError as exc:
                            return ToolCallResult(
                                call.call_id,
                                call.tool_id,
                                False,
                                f"arguments are not JSON: {exc}",
                                reason="TOOL_ARGUMENTS_INVALID",
                            )
                    if not isinstance(arguments, dict):
                        return ToolCallResult(
                            call.call_id,
                            call.tool_id,
                            False,
                            "arguments must be a JSON object",
                            reason="TOOL_ARGUMENTS_INVALID",
                        )
                    left = None
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return ToolCallResult(
                                call.call_id, call.tool_id, False, "the batch's deadline passed", reason="TOOL_TIMEOUT"
                            )
                    outcome = await self.invoker.call(call.tool_id, arguments, int(call.timeout_seconds * 1000), left)
                    return ToolCallResult(
                        call.call_id, call.tool_id, True, outcome.text, outcome.structured, seconds=outcome.seconds
                    )
                except TypecaseError as error:
                    return ToolCallResult(
                        call.call_id,
                        call.tool_id,
                        False,
                        error.message,
                        reason=error.reason,
                        seconds=time.monotonic() - started,
                    )

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(call)) for call in calls]
        return [task.result() for task in tasks]
