"""What editors are told about each node type (FlowService.ListNodeTypes): display name, palette group, the
params as a JSON Schema, default params, where outputs and branch handles come from.

The node specs (flow/nodes) remain the authority on what params mean: their `validate` decides what runs, this
module only describes the same params for people and for the console's generated forms. The schema is kept
here, one entry per spec kind, rather than on the specs, so describing a node never changes how it runs;
tests/flow/test_node_types.py checks that every spec has an entry, that every entry's default params pass both
its schema and the spec's own validation, and that the outputs and handles named here are the spec's.

Schemas are JSON Schema 2020-12. `x-widget` tells an editor which control fits a string or object beyond its
JSON type: "template" (text with {{variables}}), "code", "model" (an LLM id), "knowledge_bases" (kb ids),
"key_value" (an object of strings), "tools" (catalogue tool ids), "tool" (one) or "json"; `x-order` lists properties in the order a form shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from typecase.server.flow.nodes import SPECS
from typecase.server.flow.nodes.base import Services
from typecase.v1 import flow_pb2


def _template(title: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "string", "title": title, "description": description, "x-widget": "template", **extra}


_FORM_FIELD = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "title": "Name", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
        "type": {
            "type": "string",
            "title": "Type",
            "default": "text",
            "enum": ["text", "textarea", "number", "boolean", "select", "multi_select", "file"],
        },
        "label": {"type": "string", "title": "Label"},
        "description": {"type": "string", "title": "Help text"},
        "required": {"type": "boolean", "title": "Required", "default": False},
        "options": {"type": "array", "title": "Options", "items": {"type": "string"}},
    },
    "x-order": ["name", "type", "label", "required", "options", "description"],
}

_CONDITION = {
    "type": "object",
    "required": ["left"],
    "properties": {
        "left": _template("Value", "A value or a reference such as {{llm.text}}"),
        "op": {
            "type": "string",
            "title": "Operator",
            "default": "==",
            "enum": [
                "==",
                "!=",
                ">",
                ">=",
                "<",
                "<=",
                "contains",
                "not_contains",
                "starts_with",
                "ends_with",
                "in",
                "not_in",
                "matches",
                "is_empty",
                "is_not_empty",
                "is_true",
                "is_false",
            ],
        },
        "right": _template("Compared with", "Ignored by is_empty, is_not_empty, is_true and is_false"),
    },
    "x-order": ["left", "op", "right"],
}


@dataclass(frozen=True)
class Description:
    display_name: str
    description: str
    category: str
    properties: dict[str, Any]
    default_params: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    outputs_from: str = ""
    handles_from: str = ""
    fixed_handles: tuple[str, ...] = ()
    has_input: bool = True
    has_output: bool = True

    def schema(self) -> dict[str, Any]:
        if not self.properties:  # undescribed: any object, edited as JSON
            return {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "title": self.display_name,
                "additionalProperties": True,
                "x-widget": "json",
            }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "title": self.display_name,
            "properties": self.properties,
            "required": list(self.required),
            "x-order": list(self.properties),
        }


DESCRIPTIONS: dict[str, Description] = {
    "start": Description(
        "Start",
        "Where a run begins: declares the run's inputs, read as {{name}} or {{start.name}}.",
        "io",
        {
            "guide": {"type": "string", "title": "Opening text", "description": "Shown to people before they start"},
            "variables": {
                "type": "array",
                "title": "Inputs",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "title": "Name", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                        "type": {
                            "type": "string",
                            "title": "Type",
                            "default": "text",
                            "enum": ["text", "number", "boolean", "list", "object", "file"],
                        },
                        "default": {"title": "Default"},
                        "required": {"type": "boolean", "title": "Required", "default": False},
                    },
                    "x-order": ["name", "type", "required", "default"],
                },
            },
        },
        default_params={"variables": [{"name": "question", "type": "text"}]},
        outputs_from="variables.*.name",
        has_input=False,
    ),
    "input": Description(
        "Input",
        "Pauses the run to ask the person for a chat message or a form.",
        "io",
        {
            "mode": {"type": "string", "title": "Ask for", "enum": ["message", "form"], "default": "message"},
            "prompt": _template("Prompt", "The question or instructions shown to the person"),
            "fields": {
                "type": "array",
                "title": "Form fields",
                "items": _FORM_FIELD,
                "description": "Used when asking for a form",
            },
        },
        default_params={"mode": "message", "prompt": "Your answer?"},
        outputs_from="fields.*.name",
    ),
    "prompt": Description(
        "Prompt",
        "Renders a template into text.",
        "ai",
        {"template": _template("Template", "Text with {{variables}} from upstream nodes")},
        default_params={"template": "{{question}}"},
        required=("template",),
    ),
    "llm": Description(
        "LLM",
        "Asks a language model; the answer streams and becomes `text`.",
        "ai",
        {
            "model_id": {
                "type": "string",
                "title": "Model",
                "x-widget": "model",
                "description": "Empty: the default flow model",
            },
            "system_prompt": _template("System prompt"),
            "user_prompt": _template("User prompt"),
            "temperature": {"type": "number", "title": "Temperature", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "title": "Max tokens", "minimum": 1},
            "history_turns": {"type": "integer", "title": "Chat turns of history", "minimum": 0, "default": 0},
            "stream": {"type": "boolean", "title": "Stream tokens", "default": True},
        },
        default_params={"user_prompt": "{{question}}"},
    ),
    "agent": Description(
        "Agent",
        "A model that calls tools until it can answer (the assistants' loop); the answer streams as `text`.",
        "ai",
        {
            "model_id": {
                "type": "string",
                "title": "Model",
                "x-widget": "model",
                "description": "Empty: the default flow model (needs tool calling)",
            },
            "instructions": _template("Instructions"),
            "query": _template("Task", "What the agent is asked; default {{start.query}}"),
            "tool_ids": {"type": "array", "title": "Tools", "items": {"type": "string"}, "x-widget": "tools"},
            "kb_ids": {
                "type": "array",
                "title": "Knowledge bases",
                "items": {"type": "string"},
                "x-widget": "knowledge_bases",
            },
            "max_steps": {"type": "integer", "title": "Max steps", "minimum": 1, "maximum": 50, "default": 8},
            "tool_timeout_ms": {"type": "integer", "title": "Tool timeout (ms)", "minimum": 0},
            "temperature": {"type": "number", "title": "Temperature", "minimum": 0, "maximum": 2},
            "stream": {"type": "boolean", "title": "Stream tokens", "default": True},
        },
        default_params={"query": "{{question}}", "tool_ids": ["builtin-current_time"]},
    ),
    "tool": Description(
        "Tool",
        "Calls one tool of the catalogue with templated arguments; outputs its result.",
        "integration",
        {
            "tool_id": {"type": "string", "title": "Tool", "x-widget": "tool"},
            "arguments": {
                "type": "object",
                "title": "Arguments",
                "x-widget": "key_value",
                "additionalProperties": {"type": "string", "x-widget": "template"},
            },
            "timeout_ms": {"type": "integer", "title": "Timeout (ms)", "minimum": 0},
        },
        default_params={"tool_id": "builtin-current_time", "arguments": {}},
        required=("tool_id",),
    ),
    "knowledge_retrieval": Description(
        "Knowledge retrieval",
        "Searches knowledge bases; outputs passages, citations and a ready context.",
        "ai",
        {
            "kb_ids": {
                "type": "array",
                "title": "Knowledge bases",
                "items": {"type": "string"},
                "x-widget": "knowledge_bases",
                "minItems": 1,
            },
            "query": _template("Query"),
            "top_k": {"type": "integer", "title": "Passages", "minimum": 1, "maximum": 100},
            "mode": {"type": "string", "title": "Search", "enum": ["hybrid", "vector", "keyword"], "default": "hybrid"},
            "score_threshold": {"type": "number", "title": "Minimum score"},
            "rerank_model_id": {"type": "string", "title": "Rerank model", "x-widget": "model"},
        },
        default_params={"query": "{{question}}", "mode": "hybrid"},
        required=("kb_ids", "query"),
    ),
    "condition": Description(
        "Condition",
        "Takes the first case that holds, or else; each case is a branch.",
        "logic",
        {
            "cases": {
                "type": "array",
                "title": "Cases",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["handle"],
                    "properties": {
                        "handle": {"type": "string", "title": "Branch name", "pattern": "^[A-Za-z0-9_\\-]{1,64}$"},
                        "logic": {"type": "string", "title": "Combine", "enum": ["and", "or"], "default": "and"},
                        "conditions": {"type": "array", "title": "Conditions", "items": _CONDITION},
                        "expression": {
                            "type": "string",
                            "title": "Expression",
                            "description": "Instead of conditions, e.g. kr.count > 0 and 'yes' in lower(llm.text)",
                        },
                    },
                    "x-order": ["handle", "logic", "conditions", "expression"],
                },
            },
        },
        default_params={
            "cases": [{"handle": "yes", "logic": "and", "conditions": [{"left": "{{question}}", "op": "is_not_empty"}]}]
        },
        required=("cases",),
        handles_from="cases.*.handle",
        fixed_handles=("else",),
    ),
    "http_request": Description(
        "HTTP request",
        "Calls an HTTP API (public addresses only unless the server allows a host).",
        "integration",
        {
            "method": {
                "type": "string",
                "title": "Method",
                "default": "GET",
                "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            },
            "url": _template("URL"),
            "headers": {
                "type": "object",
                "title": "Headers",
                "x-widget": "key_value",
                "additionalProperties": {"type": "string"},
            },
            "query": {
                "type": "object",
                "title": "Query parameters",
                "x-widget": "key_value",
                "additionalProperties": {"type": "string"},
            },
            "body": {"title": "Body", "x-widget": "json", "description": "Text, or JSON sent as application/json"},
            "timeout_ms": {"type": "integer", "title": "Timeout (ms)", "minimum": 1},
        },
        default_params={"method": "GET", "url": "https://example.com/"},
        required=("url",),
    ),
    "code": Description(
        "Code",
        "Runs Python in the sandbox; main(**inputs) returns the outputs.",
        "integration",
        {
            "code": {"type": "string", "title": "Code", "x-widget": "code"},
            "inputs": {"type": "object", "title": "Inputs", "x-widget": "key_value"},
            "timeout_ms": {"type": "integer", "title": "Timeout (ms)", "minimum": 1},
        },
        default_params={"code": 'def main(**inputs):\n    return {"result": inputs}\n', "inputs": {}},
        required=("code",),
    ),
    "output": Description(
        "Output",
        "Sends a message to the person; may wait for a reply or a choice (a branch per option).",
        "io",
        {
            "template": _template("Message"),
            "stream_from": {"type": "string", "title": "Stream from LLM node", "x-widget": "node"},
            "citations": _template("Citations", "e.g. {{kr.citations}}"),
            "interaction": {"type": "string", "title": "Then", "enum": ["none", "reply", "choice"], "default": "none"},
            "prompt": _template("Prompt for the reply"),
            "options": {"type": "array", "title": "Choices", "items": {"type": "string"}},
        },
        default_params={"template": "{{question}}", "interaction": "none"},
        handles_from="options",
    ),
    "end": Description(
        "End",
        "Ends the run; its outputs become the run's outputs.",
        "io",
        {
            "outputs": {
                "type": "object",
                "title": "Outputs",
                "x-widget": "key_value",
                "additionalProperties": {"type": "string", "x-widget": "template"},
            }
        },
        default_params={"outputs": {"text": "{{question}}"}},
        outputs_from="outputs.{}",
        has_output=False,
    ),
}


def undescribed(spec: Any) -> Description:
    """A node type added without a description still reaches editors, its params edited as raw JSON (the
    test that every spec is described fails until it gets one)."""
    doc = (type(spec).__doc__ or type(spec).__module__.rsplit(".", 1)[-1]).strip().split("\n")[0]
    return Description(
        spec.kind.replace("_", " ").capitalize(), doc, "other", {}, handles_from="", has_input=spec.kind != "start"
    )


def node_type_infos(services: Services | None = None) -> list[flow_pb2.NodeTypeInfo]:
    """Every node type SPECS runs, in enum order, described for editors."""
    infos = []
    for node_type, spec in sorted(SPECS.items()):
        about = DESCRIPTIONS.get(spec.kind) or undescribed(spec)
        info = flow_pb2.NodeTypeInfo(
            type=cast(flow_pb2.NodeType, node_type),
            kind=spec.kind,
            display_name=about.display_name,
            description=about.description,
            category=about.category,
            outputs_from=about.outputs_from,
            has_input=about.has_input,
            has_output=about.has_output,
            handles_from=about.handles_from,
            fixed_handles=list(about.fixed_handles),
            waits_for_input=spec.interactive(about.default_params),
            secret_params=list(spec.secret_params),
            unavailable_reason=(spec.unavailable(services) or "") if services is not None else "",
        )
        static = spec.outputs({})
        info.dynamic_outputs = static is None
        info.outputs.extend(sorted(static or ()))
        info.params_schema.update(about.schema())
        info.default_params.update(about.default_params)
        infos.append(info)
    return infos


def values_at(params: Any, path: str) -> list[str]:
    """The strings a `outputs_from` / `handles_from` path names in params: "cases.*.handle" (a key of every
    list item), "outputs.{}" (an object's keys), "options" (a list of strings)."""
    current = [params]
    for part in path.split(".") if path else []:
        following: list[Any] = []
        for value in current:
            if part == "*" and isinstance(value, list):
                following.extend(value)
            elif part == "{}" and isinstance(value, dict):
                following.extend(value)
            elif isinstance(value, dict) and part in value:
                following.append(value[part])
        current = following
    flat: list[Any] = []
    for value in current:
        flat.extend(value if isinstance(value, list) else [value])
    return [str(v) for v in flat if isinstance(v, (str, int, float)) and str(v)]
