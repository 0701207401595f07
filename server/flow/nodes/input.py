"""Input: pauses the run until a person answers. {"mode": "message"} asks for a chat message (answer
{"text": ...}); {"mode": "form", "fields": [FormField as JSON]} asks for form values keyed by field name.
A chat turn that started the run answers the first message-mode input node with its question."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import json_format

from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, text_params
from typecase.server.flow.nodes.start import NAME
from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import flow_pb2

MODES = ("message", "form")
FIELD_TYPES = {name.removeprefix("FORM_FIELD_TYPE_").lower(): value for name, value in flow_pb2.FormFieldType.items()}


def field_type(field: dict[str, Any]) -> str:
    kind = field.get("type")
    if isinstance(kind, (int, float)):
        name = flow_pb2.FormFieldType.Name(int(kind)) if int(kind) in flow_pb2.FormFieldType.values() else ""
        return name.removeprefix("FORM_FIELD_TYPE_").lower() or "text"
    kind = str(kind or "text").lower().removeprefix("form_field_type_")
    return "text" if kind == "unspecified" else kind


def form_fields(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in params.get("fields") or [] if isinstance(f, dict) and f.get("name")]


def field_messages(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FormField JSON as the contract spells it (type as the enum name)."""
    result = []
    for f in fields:
        message = flow_pb2.FormField(
            name=str(f["name"]),
            type=cast(flow_pb2.FormFieldType, FIELD_TYPES.get(field_type(f), flow_pb2.FORM_FIELD_TYPE_TEXT)),
            label=str(f.get("label") or ""),
            description=str(f.get("description") or ""),
            required=bool(f.get("required")),
            options=[str(o) for o in f.get("options") or []],
        )
        if f.get("default_value") is not None:
            message.default_value.CopyFrom(json_format.ParseDict(f["default_value"], message.default_value))
        result.append(json_format.MessageToDict(message, preserving_proto_field_name=True))
    return result


def check_form(fields: list[dict[str, Any]], answer: dict[str, Any]) -> dict[str, Any]:
    """Form values checked against the fields: required present, numbers numeric, choices among the options."""
    values: dict[str, Any] = {}
    for f in fields:
        name, kind = str(f["name"]), field_type(f)
        value = answer.get(name)
        if value is None or value == "" or value == []:
            if f.get("required"):
                raise invalid_argument(f"input.{name}", "required")
            values[name] = f.get("default_value")
            continue
        options = [str(o) for o in f.get("options") or []]
        if kind == "number":
            if isinstance(value, bool):
                raise invalid_argument(f"input.{name}", "must be a number")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise invalid_argument(f"input.{name}", "must be a number") from None
            value = int(number) if number.is_integer() else number
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise invalid_argument(f"input.{name}", "must be true or false")
        elif kind == "select":
            if options and str(value) not in options:
                raise invalid_argument(f"input.{name}", f"must be one of {', '.join(options)}")
            value = str(value)
        elif kind == "multi_select":
            if not isinstance(value, list):
                raise invalid_argument(f"input.{name}", "must be a list")
            if options and any(str(v) not in options for v in value):
                raise invalid_argument(f"input.{name}", f"values must be among {', '.join(options)}")
        elif not isinstance(value, str):
            value = str(value)
        values[name] = value
    return values


def check_text(answer: dict[str, Any]) -> dict[str, Any]:
    text = answer.get("text")
    if not isinstance(text, str) or not text.strip():
        raise invalid_argument("input.text", "a text answer is required")
    return {"text": text}


class Input(NodeSpec):
    type = flow_pb2.NODE_TYPE_INPUT
    kind = "input"
    waits_for_input = True

    def validate(self, params):
        problems = []
        mode = params.get("mode") or "message"
        if mode not in MODES:
            problems.append(Problem("INVALID_PARAM", "mode must be message or form", "mode"))
        if mode == "form":
            fields = params.get("fields")
            if not fields:
                problems.append(Problem("MISSING_PARAM", "a form needs at least one field", "fields"))
            seen = set()
            for i, f in enumerate(fields or []):
                if not isinstance(f, dict) or not NAME.match(str(f.get("name", ""))):
                    problems.append(
                        Problem(
                            "INVALID_PARAM", "a field needs a name made of letters, digits and _", f"fields.{i}.name"
                        )
                    )
                    continue
                if f["name"] in seen:
                    problems.append(Problem("INVALID_PARAM", f"field {f['name']!r} appears twice", f"fields.{i}.name"))
                seen.add(f["name"])
                if field_type(f) not in FIELD_TYPES:
                    problems.append(
                        Problem("INVALID_PARAM", f"unknown field type {f.get('type')!r}", f"fields.{i}.type")
                    )
                if field_type(f) in ("select", "multi_select") and not f.get("options"):
                    problems.append(Problem("MISSING_PARAM", "a choice field needs options", f"fields.{i}.options"))
        return problems

    def outputs(self, params):
        if (params.get("mode") or "message") == "form":
            return {str(f["name"]) for f in form_fields(params)}
        return {"text"}

    def template_params(self, params):
        return text_params(params, "prompt")

    async def _request(self, ctx: NodeContext) -> dict[str, Any]:
        request: dict[str, Any] = {
            "node_id": ctx.node_id,
            "node_name": ctx.name,
            "prompt": await ctx.render_async(ctx.params.get("prompt") or ""),
        }
        if (ctx.params.get("mode") or "message") == "form":
            request["fields"] = field_messages(form_fields(ctx.params))
        return request

    async def run(self, ctx: NodeContext) -> NodeResult:
        if ctx.prefill is not None and (ctx.params.get("mode") or "message") == "message":
            answer = check_text(ctx.prefill)
            return NodeResult(outputs=answer, inputs={"answer": answer})
        request = await self._request(ctx)
        return NodeResult(wait=request, inputs={"prompt": request["prompt"]})

    def check_answer(self, request, answer):
        if request.get("fields"):
            return check_form(request["fields"], answer)
        return check_text(answer)

    async def resume(self, ctx, answer, partial):
        return NodeResult(outputs=dict(answer), inputs={"answer": answer})
