"""Tool calls and structured output for the in-process model, by grammar-constrained decoding.

A small local model (SmolLM2-135M) cannot be trusted to write valid JSON, let alone JSON that fits a schema; llama.cpp
can constrain sampling to a grammar, and llama-cpp-python turns a JSON Schema into that grammar. So:
  - tool_choice required / a named tool: the output is constrained to the arguments' schema when one tool is
    possible (its name is known up front, and the generated text streams as that call's argument fragments), or
    to {"name": <one of the tools>, "arguments": <its schema>} when several are (read whole, then emitted as one
    call);
  - response_format json_schema / json_object: the text is constrained to the schema (any object for json_object).
With tool_choice auto the model answers in text: a 135M model does not choose sensibly between answering and
calling, and a grammar cannot leave it that choice without also allowing broken JSON.
The conversion runs on the model's own thread (never on the event loop), only for schemas up to a size limit
(llm_local_max_schema_bytes: the converter's time and the grammar's per-token cost grow with the schema, and the
thread serves every local request); grammars are cached per schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import UNSUPPORTED, ChatCall, ToolSpec, UpstreamError


@dataclass(slots=True)
class Constraint:
    grammar: Any  # llama_cpp.LlamaGrammar
    tool: ToolSpec | None = None  # the one tool whose arguments the output is
    choose: bool = False  # the output is {"name", "arguments"} over several tools
    instruction: str = ""  # appended to the prompt as a system message


@lru_cache(maxsize=64)
def _convert(schema_json: str):
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


def _grammar(schema_json: str, max_bytes: int):
    if len(schema_json.encode()) > max_bytes:
        raise UpstreamError(
            UNSUPPORTED,
            f"the local model follows JSON Schemas of at most {max_bytes} bytes; this "
            f"one has {len(schema_json.encode())}",
        )
    return _convert(schema_json)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def constraint(call: ChatCall, max_schema_bytes: int) -> Constraint | None:
    """The grammar the call's output must follow, or None for free text."""
    forced = call.tool_choice not in ("", "auto", "none") and call.tools
    if forced:
        tools = call.tools if call.tool_choice == "required" else [t for t in call.tools if t.name == call.tool_choice]
        described = "\n".join(f"- {t.name}: {t.description}" for t in tools)
        if len(tools) == 1:
            tool = tools[0]
            return Constraint(
                _grammar(_dumps(tool.parameters), max_schema_bytes),
                tool=tool,
                instruction=f"Call the tool {tool.name} ({tool.description}). Reply with only its "
                f"arguments as a JSON object: {_dumps(tool.parameters)}",
            )
        choice = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                    "required": ["name", "arguments"],
                }
                for t in tools
            ]
        }
        return Constraint(
            _grammar(_dumps(choice), max_schema_bytes),
            choose=True,
            instruction=f"Call one of these tools:\n{described}\nReply with only a JSON object "
            '{"name": <tool>, "arguments": {...}}.',
        )
    rf = call.response_format
    if rf is None:
        return None
    schema: dict[str, Any] = rf.schema if rf.type == "json_schema" and rf.schema else {"type": "object"}
    return Constraint(
        _grammar(_dumps(schema), max_schema_bytes),
        instruction=f"Reply with only a JSON object that follows this JSON Schema: {_dumps(schema)}",
    )


def chosen(text: str) -> tuple[str, str] | None:
    """(tool name, arguments JSON) from a {"name", "arguments"} output, or None when it did not finish."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    return value["name"], json.dumps(value.get("arguments") or {}, ensure_ascii=False)
