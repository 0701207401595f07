"""LLM: {"model_id", "system_prompt", "user_prompt", "temperature", "max_tokens", "history_turns", "stream"}.
Prompts are templates; the answer streams to the run as token events (unless "stream" is false) and becomes
`text`. An empty model_id uses the default flow model."""

from __future__ import annotations

from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, as_int, node_error, text_params
from typecase.v1 import common_pb2, flow_pb2, llm_pb2

ROLES = {
    "user": common_pb2.MESSAGE_ROLE_USER,
    "assistant": common_pb2.MESSAGE_ROLE_ASSISTANT,
    "system": common_pb2.MESSAGE_ROLE_SYSTEM,
}


def finish_name(value: int) -> str:
    try:
        return common_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()
    except ValueError:
        return ""


class LLM(NodeSpec):
    type = flow_pb2.NODE_TYPE_LLM
    kind = "llm"

    def validate(self, params):
        problems = []
        if not params.get("user_prompt") and not params.get("system_prompt"):
            problems.append(Problem("MISSING_PARAM", "parameter 'user_prompt' is required", "user_prompt"))
        temperature = params.get("temperature")
        if temperature not in (None, "") and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
            problems.append(Problem("INVALID_PARAM", "temperature must be a number from 0 to 2", "temperature"))
        max_tokens = params.get("max_tokens")
        if max_tokens not in (None, "") and not (isinstance(max_tokens, (int, float)) and max_tokens >= 1):
            problems.append(Problem("INVALID_PARAM", "max_tokens must be a positive number", "max_tokens"))
        return problems

    def outputs(self, params):
        return {"text", "finish_reason", "model_id"}

    def template_params(self, params):
        return text_params(params, "system_prompt", "user_prompt")

    async def run(self, ctx: NodeContext) -> NodeResult:
        llm = ctx.services.llm
        if llm is None:
            raise node_error("no LLM service is running on this server", ctx.node_id, "UNAVAILABLE")
        model_id = str(ctx.param("model_id", "")) or await llm.default_model_id("flow")
        system = await ctx.render_async(ctx.params.get("system_prompt") or "")
        user = await ctx.render_async(ctx.params.get("user_prompt") or "")
        messages = []
        if system:
            messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=system))
        turns = as_int(ctx.params.get("history_turns"), 0)
        if turns > 0 and ctx.history:
            for item in ctx.history[-2 * turns :]:
                role = ROLES.get(str(item.get("role")))
                if role is not None:
                    messages.append(llm_pb2.ChatMessage(role=role, content=str(item.get("content") or "")))
        messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=user or system))
        config = llm_pb2.GenerationConfig()
        if ctx.params.get("temperature") not in (None, ""):
            config.temperature = float(ctx.params["temperature"])
        if ctx.params.get("max_tokens") not in (None, ""):
            config.max_tokens = as_int(ctx.params["max_tokens"], 0)
        stream = ctx.params.get("stream", True) is not False
        request = llm_pb2.GenerateRequest(model_id=model_id, messages=messages, config=config, user=ctx.owner_id)
        parts: list[str] = []
        served = model_id
        usage = common_pb2.Usage()
        finish = 0
        async for chunk in llm.generate(request):
            if chunk.served_model_id:
                served = chunk.served_model_id
            if chunk.text:
                parts.append(chunk.text)
                if stream:
                    ctx.emit_token(chunk.text)
            if chunk.finish_reason:
                finish = chunk.finish_reason
            if chunk.HasField("usage"):
                usage = chunk.usage
        inputs = {"model_id": model_id, "system_prompt": system, "user_prompt": user}
        return NodeResult(
            outputs={"text": "".join(parts), "finish_reason": finish_name(finish), "model_id": served},
            inputs=inputs,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
