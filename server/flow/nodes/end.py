"""End: ends the run; {"outputs": {key: template}} become the run's outputs."""

from __future__ import annotations

from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, text_params
from typecase.v1 import flow_pb2


class End(NodeSpec):
    type = flow_pb2.NODE_TYPE_END
    kind = "end"

    def validate(self, params):
        outputs = params.get("outputs")
        if outputs is not None and not isinstance(outputs, dict):
            return [Problem("INVALID_PARAM", "outputs must be an object of key: template", "outputs")]
        return []

    def outputs(self, params):
        outputs = params.get("outputs")
        return set(outputs) if isinstance(outputs, dict) else set()

    def template_params(self, params):
        return text_params(params, "outputs")

    async def run(self, ctx: NodeContext) -> NodeResult:
        outputs = ctx.params.get("outputs") or {}
        return NodeResult(outputs=await ctx.resolve_async(outputs) if isinstance(outputs, dict) else {})
