"""Start: the entry point. Declares the run's inputs ({"variables": [{name, type, default, required}]}) and a
guide word shown to people before they start. Its outputs are the run's inputs, so `{{start.question}}` and
`{{question}}` read the same value."""

from __future__ import annotations

import re
from typing import Any

from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem
from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import flow_pb2

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TYPES = {"text", "string", "number", "boolean", "list", "object", "file", ""}


def variables(params: dict[str, Any]) -> list[dict[str, Any]]:
    declared = params.get("variables") or []
    return [v for v in declared if isinstance(v, dict) and isinstance(v.get("name"), str)]


def coerce(name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "number":
        if isinstance(value, bool):
            raise invalid_argument(f"inputs.{name}", "must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise invalid_argument(f"inputs.{name}", "must be a number") from None
        return int(number) if number.is_integer() else number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise invalid_argument(f"inputs.{name}", "must be true or false")
    if kind == "list" and not isinstance(value, list):
        raise invalid_argument(f"inputs.{name}", "must be a list")
    if kind == "object" and not isinstance(value, dict):
        raise invalid_argument(f"inputs.{name}", "must be an object")
    if kind in ("text", "string", "file") and not isinstance(value, str):
        return str(value) if not isinstance(value, (dict, list)) else value
    return value


def chat_files(attachments: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A chat turn's attachments as file values: {name, mime_type, size_bytes, url, file_id} (url "object:<key>"
    for a stored copy, else the URL the user gave; file_id for a knowledge-base file)."""
    files = []
    for a in attachments or ():
        files.append(
            {
                "name": str(a.get("name") or ""),
                "mime_type": str(a.get("mime_type") or a.get("mimeType") or ""),
                "size_bytes": int(a.get("size_bytes") or a.get("sizeBytes") or 0),
                "url": str(a.get("url") or ""),
                "file_id": str(a.get("file_id") or a.get("fileId") or ""),
            }
        )
    return files


def with_files(params: dict[str, Any], given: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat attachments fill the start variables of type file the caller left empty, in declaration order (a
    variable with "list": true takes all that are left); every run also gets them all as `files`."""
    values = dict(given)
    if not files:
        return values
    left = list(files)
    for var in variables(params):
        if str(var.get("type") or "") != "file" or values.get(var["name"]) not in (None, "") or not left:
            continue
        if var.get("list"):
            values[var["name"]], left = left, []
        else:
            values[var["name"]] = left.pop(0)
    values.setdefault("files", files)
    return values


def run_inputs(params: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The run's inputs: the given values checked against the declared variables, defaults filled in.
    Inputs that are not declared are kept (templates may read them by name)."""
    values = dict(given)
    for var in variables(params):
        name, kind = var["name"], str(var.get("type") or "")
        value = values.get(name)
        if value is None or value == "":
            default = var.get("default")
            if default is not None and default != "":
                value = default
            elif var.get("required"):
                raise invalid_argument(f"inputs.{name}", "required by the flow's start node")
            else:
                value = "" if kind in ("text", "string") else None
        values[name] = coerce(name, kind, value)
    return values


class Start(NodeSpec):
    type = flow_pb2.NODE_TYPE_START
    kind = "start"

    def validate(self, params):
        problems = []
        seen = set()
        for i, var in enumerate(params.get("variables") or []):
            if not isinstance(var, dict) or not NAME.match(str(var.get("name", ""))):
                problems.append(
                    Problem(
                        "INVALID_PARAM", "a variable needs a name made of letters, digits and _", f"variables.{i}.name"
                    )
                )
                continue
            if var["name"] in seen:
                problems.append(
                    Problem("INVALID_PARAM", f"variable {var['name']!r} is declared twice", f"variables.{i}.name")
                )
            seen.add(var["name"])
            if str(var.get("type") or "") not in TYPES:
                problems.append(
                    Problem("INVALID_PARAM", f"unknown variable type {var.get('type')!r}", f"variables.{i}.type")
                )
        return problems

    def outputs(self, params):
        return {v["name"] for v in variables(params)} | {"guide"}

    async def run(self, ctx: NodeContext) -> NodeResult:
        inputs = (ctx.scope.get("sys") or {}).get("inputs") or {}
        outputs = {**inputs, "guide": str(ctx.params.get("guide") or "")}
        return NodeResult(outputs=outputs, inputs=dict(inputs))
