"""AGENT: the agent loop of assistants (server/agent/loop.py) as a flow node. params: {"model_id", "instructions"
(template), "query" (template; default "{{start.query}}"), "tool_ids", "kb_ids", "max_steps", "tool_timeout_ms",
"temperature", "stream"}. The answer's text streams as the node's tokens; outputs {"text", "steps" (each tool call
as ToolStep JSON), "finish_reason"}. MAX_STEPS fails the node (AGENT_MAX_STEPS) so a graph cannot mistake an
unfinished answer for one.

The toolbox comes from `Services.agents` (agent_wiring.FlowAgents, set by app.py once tools exist: flows are built
before tools because flows are tools); the run's user is the caller, so the model calls only what they may."""

from __future__ import annotations

from google.protobuf import json_format

from typecase.server.agent.loop import AgentLoop, AgentSettings, Finished, StepCompleted, TextDelta
from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, as_int, node_error, text_params
from typecase.server.flow.nodes.llm import finish_name
from typecase.v1 import common_pb2, flow_pb2, llm_pb2

DEFAULT_QUERY = "{{start.query}}"


def _ids(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class Agent(NodeSpec):
    type = flow_pb2.NODE_TYPE_AGENT
    kind = "agent"

    def validate(self, params):
        problems = []
        for key in ("tool_ids", "kb_ids"):
            value = params.get(key)
            if value not in (None, "") and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                problems.append(Problem("INVALID_PARAM", f"{key} must be a list of ids", key))
        steps = params.get("max_steps")
        if steps not in (None, "") and not (isinstance(steps, (int, float)) and 1 <= steps <= 50):
            problems.append(Problem("INVALID_PARAM", "max_steps must be 1 to 50", "max_steps"))
        temperature = params.get("temperature")
        if temperature not in (None, "") and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
            problems.append(Problem("INVALID_PARAM", "temperature must be a number from 0 to 2", "temperature"))
        return problems

    def outputs(self, params):
        return {"text", "steps", "finish_reason"}

    def template_params(self, params):
        return text_params({"query": DEFAULT_QUERY, **params}, "instructions", "query")

    def unavailable(self, services):
        return None if getattr(services, "agents", None) is not None else "agents need the tools service"

    async def run(self, ctx: NodeContext) -> NodeResult:
        llm, agents = ctx.services.llm, getattr(ctx.services, "agents", None)
        if llm is None or agents is None:
            raise node_error("agents need the LLM and tools services on this server", ctx.node_id, "UNAVAILABLE")
        settings = ctx.services.settings
        model_id = str(ctx.param("model_id", "")) or await llm.default_model_id("flow")
        instructions = await ctx.render_async(ctx.params.get("instructions") or "")
        query = await ctx.render_async(ctx.params.get("query") or DEFAULT_QUERY)
        toolbox = await agents.toolbox(
            _ids(ctx.params.get("tool_ids")),
            _ids(ctx.params.get("kb_ids")),
            as_int(ctx.params.get("tool_timeout_ms"), 0),
        )
        config = llm_pb2.GenerationConfig()
        if ctx.params.get("temperature") not in (None, ""):
            config.temperature = float(ctx.params["temperature"])
        loop = AgentLoop(
            llm.generate,
            toolbox,
            AgentSettings(
                model_id=model_id,
                system=instructions,
                config=config,
                max_steps=as_int(ctx.params.get("max_steps"), settings.assistants_default_max_steps),
                preview_chars=settings.agent_result_preview_chars,
                max_result_chars=settings.agent_max_result_chars,
                user=ctx.owner_id,
            ),
        )
        stream = ctx.params.get("stream", True) is not False
        parts: list[str] = []
        steps: list[dict] = []
        finished: Finished | None = None
        question = llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=query)
        async for event in loop.run([question]):
            if isinstance(event, TextDelta) and event.text:
                parts.append(event.text)
                if stream:
                    ctx.emit_token(event.text)
            elif isinstance(event, StepCompleted):  # its calls' final states, in the order the model asked
                steps += [json_format.MessageToDict(t, preserving_proto_field_name=True) for t in event.tools]
            elif isinstance(event, Finished):
                finished = event
        if finished is not None and finished.finish_reason == common_pb2.FINISH_REASON_MAX_STEPS:
            raise node_error(finished.notice, ctx.node_id, "AGENT_MAX_STEPS")
        usage = finished.usage if finished else common_pb2.Usage()
        return NodeResult(
            outputs={
                "text": "".join(parts),
                "steps": steps,
                "finish_reason": finish_name(finished.finish_reason if finished else 0),
            },
            inputs={"model_id": model_id, "instructions": instructions, "query": query},
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
