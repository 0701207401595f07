"""Proto-field helpers every domain's servicer uses: which fields an update names, keyword filters in SQL, and
Struct values as plain data."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from typecase.server.rpc.errors import invalid_argument

LIKE_ESCAPE = "/"  # pass as `escape=LIKE_ESCAPE` with like_pattern's result


def mask_paths(mask, message, allowed: set[str], what: str) -> set[str]:
    """The fields an update names: update_mask when given (unknown paths are INVALID_ARGUMENT), else the updatable
    fields set to non-default values in the message."""
    if mask is not None and mask.paths:
        paths = set(mask.paths)
        unknown = paths - allowed
        if unknown:
            raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a {what}")
        return paths
    return {f.name for f, _ in message.ListFields()} & allowed


def like_pattern(keyword: str) -> str:
    """A case-insensitive "contains" pattern for SQL LIKE, with the keyword's own % and _ taken literally."""
    escaped = keyword.lower().replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def integral(value: Any) -> Any:
    """Struct numbers are doubles: whole ones become ints again, so {"type": "integer"} validates."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def struct_dict(message, present: bool = True) -> dict[str, Any]:
    """A Struct as plain data with whole numbers as ints; {} when the field is not `present`."""
    return integral(json_format.MessageToDict(message)) if present else {}
