"""Output: a message to the person (streamed in chat). {"template": text, "stream_from": llm node id,
"citations": reference to citations (e.g. "{{kr.citations}}"), "interaction": "none" | "reply" | "choice",
"options": [...], "prompt": text}.

With `stream_from`, the LLM's streamed tokens are the message as it is generated: the output node only streams
what its template adds after that text (e.g. a list of sources). `interaction` makes the node wait: "reply"
asks for a free-text answer (outputs `reply`), "choice" asks to pick one of `options` (outputs `choice`) and the
run continues through the edges whose source_handle is the choice (edges without a handle are always taken)."""

from __future__ import annotations

from typing import Any

from typecase.server.flow import templates
from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, text_params
from typecase.server.flow.nodes.input import check_text
from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import flow_pb2

INTERACTIONS = ("none", "reply", "choice")


def interaction(params: dict[str, Any]) -> str:
    return str(params.get("interaction") or "none").lower()


def options(params: dict[str, Any]) -> list[str]:
    return [str(o) for o in params.get("options") or [] if str(o)]


class Output(NodeSpec):
    type = flow_pb2.NODE_TYPE_OUTPUT
    kind = "output"

    def validate(self, params):
        problems = []
        if not params.get("template") and not params.get("stream_from"):
            problems.append(Problem("MISSING_PARAM", "parameter 'template' (or 'stream_from') is required", "template"))
        mode = interaction(params)
        if mode not in INTERACTIONS:
            problems.append(Problem("INVALID_PARAM", "interaction must be none, reply or choice", "interaction"))
        if mode == "choice" and not options(params):
            problems.append(Problem("MISSING_PARAM", "a choice needs options", "options"))
        return problems

    def outputs(self, params):
        return {"text", "citations", "reply", "choice"}

    def handles(self, params):
        return set(options(params)) | {""} if interaction(params) == "choice" else None

    def interactive(self, params):
        return interaction(params) in ("reply", "choice")

    def template_params(self, params):
        found = text_params(params, "template", "citations", "prompt")
        if params.get("stream_from") and not params.get("template"):
            found.append(("stream_from", "{{%s.text}}" % params["stream_from"]))
        return found

    async def run(self, ctx: NodeContext) -> NodeResult:
        source = str(ctx.params.get("stream_from") or "")
        template = ctx.params.get("template") or ("{{%s.text}}" % source if source else "")
        text = await ctx.render_async(template)
        streamed = ""
        if source:
            streamed = templates.as_text((ctx.scope.get(source) or {}).get("text"))
        if source and streamed and text.startswith(streamed):
            extra = text[len(streamed) :]
        else:
            extra = text
        if extra:
            ctx.emit_token(extra)
        citations = await ctx.resolve_async(ctx.params["citations"]) if ctx.params.get("citations") else []
        if not isinstance(citations, list):
            citations = []
        outputs = {"text": text, "citations": citations}
        mode = interaction(ctx.params)
        if mode == "none":
            return NodeResult(outputs=outputs, inputs={"template": template})
        request: dict[str, Any] = {
            "node_id": ctx.node_id,
            "node_name": ctx.name,
            "prompt": await ctx.render_async(ctx.params.get("prompt") or "") or text,
        }
        if mode == "choice":
            request["fields"] = [
                {
                    "name": "choice",
                    "type": "FORM_FIELD_TYPE_SELECT",
                    "label": request["prompt"],
                    "required": True,
                    "options": options(ctx.params),
                }
            ]
        return NodeResult(outputs=outputs, inputs={"template": template}, wait=request)

    def check_answer(self, request, answer):
        if request.get("fields"):
            choice = answer.get("choice")
            if choice is None and isinstance(answer.get("text"), str):
                choice = answer["text"].strip()  # a chat message naming the choice
            allowed = request["fields"][0].get("options") or []
            if str(choice) not in allowed:
                raise invalid_argument("input.choice", f"must be one of {', '.join(allowed)}")
            return {"choice": str(choice)}
        return check_text(answer)

    async def resume(self, ctx, answer, partial):
        if "choice" in answer:
            return NodeResult(
                outputs={**partial, "choice": answer["choice"]},
                inputs={"answer": answer},
                handles=[answer["choice"], ""],
            )
        return NodeResult(outputs={**partial, "reply": answer["text"]}, inputs={"answer": answer})
