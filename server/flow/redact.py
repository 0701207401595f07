"""What the users who may run a published flow but not edit it are shown of it: its current graph, with the value
of every param a node spec marks secret (`NodeSpec.secret_params`: the http node's headers, the code node's code)
replaced by REDACTED; an object param keeps its keys, so the shape of the node stays readable. What a node echoes
of its params in run events (NodeRun.inputs) is redacted the same way for every reader: the run's owner may be
such a runner."""

from __future__ import annotations

from typing import Any

from typecase.server.flow.graph import _node_type as node_type  # graph JSON's type (name or number) as an int
from typecase.server.flow.nodes import SPECS
from typecase.server.flow.nodes.base import NodeSpec

REDACTED = "****"


def redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): REDACTED for key in value}
    if value is None or value == "" or value == []:
        return value  # nothing to hide; showing it empty tells the truth
    return REDACTED


def redact_params(spec: NodeSpec | None, params: dict[str, Any]) -> dict[str, Any]:
    """The params with the spec's secret ones redacted (the same dict when there are none)."""
    secret = [key for key in (spec.secret_params if spec is not None else ()) if key in params]
    if not secret:
        return params
    return {**params, **{key: redact_value(params[key]) for key in secret}}


def redact_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """A copy of a graph (proto JSON) with every node's secret params redacted."""
    nodes = []
    for raw in graph.get("nodes") or []:
        params = raw.get("params") if isinstance(raw, dict) else None
        if isinstance(params, dict):
            raw = {**raw, "params": redact_params(SPECS.get(node_type(raw.get("type"))), params)}
        nodes.append(raw)
    return {**graph, "nodes": nodes}
