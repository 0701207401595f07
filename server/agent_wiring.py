"""Composition of agents (beside app.py): the agent loop's Toolbox over the tools domain's ToolsApi, so the loop
(server/agent/) and the domains that run it (chat, flow, compat) import neither tools nor each other.

Knowledge offered as a tool is the built-in knowledge_search with the agent's bases bound: the model sees only
`query` (and `top_k`), and every call searches exactly the bases the assistant or node chose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from google.protobuf import struct_pb2

from typecase.server.agent.instructions import system_prompt
from typecase.server.agent.loop import AgentLoop, AgentSettings, Event, Generate, OnResult, Outcome
from typecase.server.rpc import principal as caller
from typecase.server.tools.api import Declarations, ToolCall, ToolsApi, declared_name
from typecase.v1 import assistant_pb2, common_pb2, llm_pb2

ASSISTANT_PREFIX = "assistant:"
KNOWLEDGE_TOOL = "builtin-knowledge_search"
KNOWLEDGE_NAME = "knowledge_search"
KNOWLEDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "description": "what to look for"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 20},
    },
    "required": ["query"],
}


class CatalogToolbox:
    """agent.loop.Toolbox over ToolsApi: declarations from the catalogue, batches run under the caller's rights."""

    def __init__(self, tools: ToolsApi, declared: Declarations, kb_ids: Sequence[str], timeout_seconds: float):
        self.tools = tools
        self.declared = declared
        self.declarations = declared.tools
        self.kb_ids = list(kb_ids)
        self.timeout_seconds = timeout_seconds

    def tool_id(self, name: str) -> str:
        return self.declared.tool_id(name)

    async def idempotent(self, name: str) -> bool:
        tool_id = self.tool_id(name)
        return bool(tool_id) and await self.tools.idempotent(tool_id)

    async def run(self, calls: Sequence[llm_pb2.ToolCall], on_result: OnResult | None = None) -> list[Outcome]:
        """Run the calls concurrently; `on_result(i, outcome)` as each one ends (so it is logged at once)."""
        outcomes: list[Outcome | None] = [None] * len(calls)
        batch: list[tuple[int, ToolCall]] = []
        for i, call in enumerate(calls):
            tool_id = self.tool_id(call.name)
            if not tool_id:
                outcomes[i] = Outcome(call.id, False, f"there is no tool named {call.name!r}", "TOOL_NOT_FOUND")
                continue
            arguments: dict | str = call.arguments
            if tool_id == KNOWLEDGE_TOOL and self.kb_ids:
                try:
                    parsed = json.loads(call.arguments or "{}")
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    arguments = {**parsed, "knowledge_base_ids": self.kb_ids}
            batch.append((i, ToolCall(str(i), tool_id, arguments, self.timeout_seconds)))
        for i, outcome in enumerate(outcomes):
            if outcome is not None and on_result is not None:
                on_result(i, outcome)

        async def one(i: int, call: ToolCall) -> None:
            result = (await self.tools.execute([call]))[0]
            outcome = Outcome(calls[i].id, result.ok, result.text, result.reason, result.seconds, result.tool_id)
            outcomes[i] = outcome
            if on_result is not None:
                on_result(i, outcome)

        if batch:
            async with asyncio.TaskGroup() as group:
                for i, tool_call in batch:
                    group.create_task(one(i, tool_call))
        return [o for o in outcomes if o is not None]


async def catalog_toolbox(
    tools: ToolsApi, tool_ids: Sequence[str], kb_ids: Sequence[str], knowledge_as_tool: bool, timeout_ms: int
) -> CatalogToolbox:
    """The toolbox of an agent with these tools and bases (TOOL_NOT_FOUND for a tool the caller may not call)."""
    refs = [ref for ref in tool_ids if ref != KNOWLEDGE_TOOL or not kb_ids]
    declared = await tools.declare(refs)
    if kb_ids and knowledge_as_tool:
        name = declared_name(KNOWLEDGE_NAME, set(declared.by_name))
        parameters = struct_pb2.Struct()
        parameters.update(KNOWLEDGE_SCHEMA)
        declared.tools.append(
            llm_pb2.Tool(
                name=name,
                description="Search the assistant's knowledge bases; returns the most relevant passages.",
                parameters=parameters,
            )
        )
        declared.by_name[name] = KNOWLEDGE_TOOL
    return CatalogToolbox(tools, declared, kb_ids, timeout_ms / 1000)


class Agents:
    """chat.agent_turn.AgentSource (and what compat and flow use): assistants as the caller may run them, their
    toolboxes over the tools catalogue, and the loop's settings from an assistant and the server's limits."""

    def __init__(self, settings, assistants, tools: ToolsApi, generate: Generate):
        self.server = settings
        self.assistants = assistants  # AssistantService (its Python API: runnable, runnable_by_name, online)
        self.tools = tools
        self.generate = generate

    async def by_model(self, ref: str):
        """The assistant an OpenAI `model` names: "assistant:<id>", or an assistant's name (the caller's own, else
        an online one); None when the name is no assistant's."""
        if ref.startswith(ASSISTANT_PREFIX):
            return await self.assistants.runnable(ref[len(ASSISTANT_PREFIX) :])
        return await self.assistants.runnable_by_name(ref)

    async def listed(self) -> list:
        """The online assistants and the caller's own, newest first (at most assistants_listed_as_models)."""
        return await self.assistants.online(self.server.assistants_listed_as_models)

    async def run(
        self, assistant, messages: Sequence[llm_pb2.ChatMessage], config: llm_pb2.GenerationConfig, user: str
    ) -> AsyncGenerator[Event, None]:
        """The assistant answering `messages` (a whole conversation, as /openai/v1 receives it): its instructions
        first, its tools run server-side."""
        me = caller.current()
        toolbox = await self.toolbox(assistant)
        settings = self.settings(assistant, "", user)
        settings.config.MergeFrom(config)
        system = system_prompt(assistant, {}, me.user_id)
        prompt = [llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=system)] if system else []
        prompt += list(messages)
        async for event in AgentLoop(self.generate, toolbox, settings).run(prompt):
            yield event

    async def assistant(self, assistant_id: str):
        return await self.assistants.runnable(assistant_id)

    async def toolbox(self, assistant) -> CatalogToolbox:
        as_tool = assistant.knowledge_mode != assistant_pb2.KNOWLEDGE_MODE_BEFORE_FIRST_STEP
        return await catalog_toolbox(
            self.tools, list(assistant.tool_ids), list(assistant.kb_ids), as_tool, assistant.tool_timeout_ms
        )

    def settings(self, assistant, model_id: str, user: str) -> AgentSettings:
        s = self.server
        config = llm_pb2.GenerationConfig()
        config.CopyFrom(assistant.generation_config)
        return AgentSettings(
            model_id=model_id or assistant.model_id,
            config=config,
            max_steps=assistant.max_steps or s.assistants_default_max_steps,
            first_tool_choice=assistant.tool_choice,
            preview_chars=s.agent_result_preview_chars,
            max_result_chars=s.agent_max_result_chars,
            user=user,
        )


class FlowAgents:
    """What AGENT and TOOL flow nodes use of the tools domain (flow/nodes/base.py Services.agents)."""

    def __init__(self, tools: ToolsApi):
        self.tools = tools

    async def toolbox(self, tool_ids: Sequence[str], kb_ids: Sequence[str], timeout_ms: int) -> CatalogToolbox:
        return await catalog_toolbox(self.tools, tool_ids, kb_ids, True, timeout_ms)

    async def call(self, tool_id: str, arguments: dict, timeout_ms: int):
        """One call (a tools.api.ToolCallResult: ok, text, structured, reason, seconds)."""
        if not isinstance(arguments, dict):
            arguments = {}
        return (await self.tools.execute([ToolCall("node", tool_id, arguments, timeout_ms / 1000)]))[0]
