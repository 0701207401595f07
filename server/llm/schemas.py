"""JSON Schemas supplied by callers (tool parameters, response formats): checked when a request arrives, and used
to validate what a model returned when the caller asked for strictness.

Validation uses jsonschema-rs rather than the pure-Python jsonschema: a caller's schema carries regular expressions
(`pattern`, `patternProperties`) that are matched against model output on the event loop, and Python's `re`
backtracks (`^(a+)+$` against 30 characters takes seconds). jsonschema-rs is asked for its linear-time regex engine
(RegexOptions: no lookaround or backreferences, which such schemas do not need) and never fetches remote `$ref`s
(offline), so a schema cannot make Typecase call out. Measured here: the pattern above against a 50,000-character
string fails in ~1 ms.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema_rs

MAX_MESSAGE_CHARS = 300  # of a validation error quoted back to the caller (it may echo a long instance)


class SchemaError(ValueError):
    """The schema itself is not a valid JSON Schema (or cannot be compiled)."""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


@lru_cache(maxsize=256)
def _compiled(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    if not jsonschema_rs.meta.is_valid(schema):
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            raise SchemaError(_short(exc.message)) from None
        raise SchemaError("not a valid JSON Schema")
    try:
        return jsonschema_rs.validator_for(schema, pattern_options=jsonschema_rs.RegexOptions(), offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        raise SchemaError(_short(str(exc))) from None


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def check(schema: dict[str, Any]) -> None:
    """Raises SchemaError when `schema` is not a usable JSON Schema."""
    _compiled(_key(schema))


def problem(schema: dict[str, Any], instance: Any) -> str | None:
    """Why `instance` does not validate against `schema` (the first error, with where it is), or None."""
    validator = _compiled(_key(schema))
    for error in validator.iter_errors(instance):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
        return _short(f"at ${where}: {error.message}")
    return None


def parse_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in `text`, None) or (None, why it is not one)."""
    try:
        value = json.loads(text or "")
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, "not a JSON object"
    return value, None
