"""TOOL: one catalogue tool called with templated arguments. params: {"tool_id", "arguments": {name: template},
"timeout_ms"}; a template that is exactly one {{ref}} keeps the referenced value's type (a number stays a number).
Outputs {"text", "structured", "duration_ms"}; a failing call fails the node with its TOOL_* reason (so a graph's
error handling sees why), run under the run's user (Services.agents, see nodes/agent.py)."""

from __future__ import annotations

import grpc

from typecase.server.flow import templates
from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, as_int, node_error, required
from typecase.v1 import flow_pb2

GRPC_CODES = {
    "TOOL_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "TOOL_ARGUMENTS_INVALID": grpc.StatusCode.INVALID_ARGUMENT,
    "TOOL_TIMEOUT": grpc.StatusCode.DEADLINE_EXCEEDED,
}


class Tool(NodeSpec):
    type = flow_pb2.NODE_TYPE_TOOL
    kind = "tool"

    def validate(self, params):
        problems = required(params, "tool_id")
        arguments = params.get("arguments")
        if arguments not in (None, "") and not isinstance(arguments, dict):
            problems.append(Problem("INVALID_PARAM", "arguments must be an object of name -> template", "arguments"))
        return problems

    def outputs(self, params):
        return {"text", "structured", "duration_ms"}

    def template_params(self, params):
        arguments = params.get("arguments")
        return list(templates.strings(arguments, "arguments")) if isinstance(arguments, dict) else []

    def unavailable(self, services):
        return None if getattr(services, "agents", None) is not None else "tool nodes need the tools service"

    async def run(self, ctx: NodeContext) -> NodeResult:
        agents = getattr(ctx.services, "agents", None)
        if agents is None:
            raise node_error("tool nodes need the tools service on this server", ctx.node_id, "UNAVAILABLE")
        tool_id = str(ctx.param("tool_id", ""))
        arguments = await ctx.resolve_async(ctx.params.get("arguments") or {})
        result = await agents.call(tool_id, arguments, as_int(ctx.params.get("timeout_ms"), 0))
        if not result.ok:
            raise node_error(
                result.text,
                ctx.node_id,
                result.reason or "TOOL_FAILED",
                GRPC_CODES.get(result.reason, grpc.StatusCode.ABORTED),
                tool_id=tool_id,
            )
        return NodeResult(
            outputs={"text": result.text, "structured": result.structured, "duration_ms": int(result.seconds * 1000)},
            inputs={"tool_id": tool_id, "arguments": arguments},
        )
