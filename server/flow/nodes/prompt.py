"""Prompt template: renders {"template": "..."} (sandboxed Jinja2) into `text`."""

from __future__ import annotations

from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, required, text_params
from typecase.v1 import flow_pb2


class Prompt(NodeSpec):
    type = flow_pb2.NODE_TYPE_PROMPT
    kind = "prompt"

    def validate(self, params):
        return required(params, "template")

    def outputs(self, params):
        return {"text"}

    def template_params(self, params):
        return text_params(params, "template")

    async def run(self, ctx: NodeContext) -> NodeResult:
        text = await ctx.render_async(ctx.params.get("template", ""))
        return NodeResult(outputs={"text": text})
