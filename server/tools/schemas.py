"""Tool parameter schemas: checked when a provider's tools are loaded, and used to validate call arguments.

jsonschema-rs with its linear-time regex engine and no remote $refs, for the reason server/llm/schemas.py gives
(a provider's `pattern` must not backtrack on the event loop, and a schema must not make Typecase call out); this
is the tools domain's own small copy of that choice because a domain does not import another."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema_rs

MAX_MESSAGE_CHARS = 300


class SchemaError(ValueError):
    """Not a usable JSON Schema."""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


@lru_cache(maxsize=1024)
def _compiled(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    try:
        return jsonschema_rs.validator_for(schema, pattern_options=jsonschema_rs.RegexOptions(), offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        raise SchemaError(_short(str(exc))) from None


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def check(schema: dict[str, Any]) -> None:
    _compiled(_key(schema))


def problem(schema: dict[str, Any], instance: Any) -> tuple[str, str] | None:
    """(JSON path, message) of the first reason `instance` does not validate, or None."""
    if not schema:
        return None
    validator = _compiled(_key(schema))
    for error in validator.iter_errors(instance):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
        return where, _short(error.message)
    return None
