"""A model's answer against what the caller asked for: tool calls as proto messages, and, when the caller asked
for strictness, the arguments of strict tools and a strict response format validated against their schemas
(a Complete that does not validate fails rather than hand the caller something its code will choke on).
"""

from __future__ import annotations

from typecase.server.llm import errors, schemas
from typecase.server.llm.models import ModelRow
from typecase.server.llm.prompt import Prompt
from typecase.server.llm.providers import Delta, ToolCallDelta
from typecase.v1 import llm_pb2


def add_tool_calls(message: llm_pb2.GenerateResponse, pieces: list[ToolCallDelta]) -> None:
    add = message.tool_calls.add
    for p in pieces:
        add(index=p.index, id=p.id, name=p.name, arguments=p.arguments)


def check_answer(request: Prompt, answer: Delta, model: ModelRow) -> None:
    """Raises UPSTREAM_ERROR naming the problem when a strict tool's arguments or a strict response format's
    text do not validate."""
    for call in answer.tool_calls or ():
        tool = request.tool(call.name)
        if tool is None:
            if any(t.strict for t in request.tools):
                raise errors.invalid_output(model, f"a call of the unknown tool {call.name!r}", "no such tool")
            continue
        if not tool.strict:
            continue
        arguments, problem = schemas.parse_object(call.arguments)
        if problem is None:
            problem = schemas.problem(tool.parameters, arguments)
        if problem is not None:
            raise errors.invalid_output(model, f"arguments for tool {call.name!r}", problem)
    rf = request.response_format
    if rf is not None and rf.type == "json_schema" and rf.strict and not answer.tool_calls:
        document, problem = schemas.parse_object(answer.text)
        if problem is None:
            problem = schemas.problem(rf.schema or {}, document)
        if problem is not None:
            raise errors.invalid_output(model, "an answer", problem)
