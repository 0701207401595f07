"""The graph model (compiled from the proto Graph or its JSON) and its validation.

Execution semantics the model prepares for the engine:
- edges found by a depth-first walk from the start node to lead back to a node on the walk's path are *back
  edges* (they close a loop); all others are *forward edges*;
- a node runs once every forward edge into it is resolved (its source finished and took or skipped it) and at
  least one was taken; a node whose forward inputs were all skipped is skipped, and skips its own edges;
- a taken back edge re-enters its target at once: the loop's nodes (those reachable from the target) start a new
  round, forgetting what arrived from inside the loop but keeping what arrived from outside.

Validation reports every problem with the node (and edge, and parameter) at fault: unknown node types, missing
or invalid parameters, dangling edges, unknown branch handles, unreachable nodes, cycles without an exit,
templates that do not parse and variables that are not defined upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from typecase.server.flow import expr, templates
from typecase.server.flow.nodes import SPECS
from typecase.server.flow.nodes.base import NodeSpec
from typecase.server.flow.nodes.start import variables as start_variables
from typecase.v1 import flow_pb2

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED = {"sys", "inputs", "loop", "range", "true", "false", "none", "True", "False", "None"}
SYS_KEYS = {"run_id", "flow_id", "version_id", "session_id", "user_id", "inputs"}
ERROR, WARNING = flow_pb2.VALIDATION_SEVERITY_ERROR, flow_pb2.VALIDATION_SEVERITY_WARNING


@dataclass(slots=True)
class Node:
    id: str
    type: int
    name: str
    params: dict[str, Any]
    spec: NodeSpec | None

    @property
    def runnable(self) -> NodeSpec:
        """The spec of a node in a graph that passed validation (which refuses unknown types)."""
        assert self.spec is not None
        return self.spec


@dataclass(slots=True)
class Edge:
    id: str
    source: str
    target: str
    handle: str


def edge_key(edge: Edge) -> str:
    """The edge's id, or a stand-in for an edge saved without one."""
    return edge.id or f"{edge.source}->{edge.target}:{edge.handle}"


def _node_type(value: Any) -> int:
    if isinstance(value, str):
        try:
            return flow_pb2.NodeType.Value(value if value.startswith("NODE_TYPE_") else f"NODE_TYPE_{value.upper()}")
        except ValueError:
            return -1
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return -1


def graph_dict(graph: flow_pb2.Graph) -> dict[str, Any]:
    return json_format.MessageToDict(graph, preserving_proto_field_name=True)


def graph_message(data: dict[str, Any] | None) -> flow_pb2.Graph:
    graph = flow_pb2.Graph()
    if data:
        json_format.ParseDict(data, graph, ignore_unknown_fields=True)
    return graph


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: list[Edge]
    duplicates: list[str] = field(default_factory=list)  # node ids given more than once
    out_edges: dict[str, list[Edge]] = field(default_factory=dict)
    in_forward: dict[str, list[Edge]] = field(default_factory=dict)
    back_edges: set[str] = field(default_factory=set)
    start_id: str = ""
    _regions: dict[str, frozenset[str]] = field(default_factory=dict)
    _ancestors: dict[str, frozenset[str]] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Graph:
        data = data or {}
        nodes: dict[str, Node] = {}
        duplicates = []
        for raw in data.get("nodes") or []:
            node_id = str(raw.get("id") or "")
            node_type = _node_type(raw.get("type"))
            params = raw.get("params") or {}
            node = Node(
                node_id,
                node_type,
                str(raw.get("name") or ""),
                params if isinstance(params, dict) else {},
                SPECS.get(node_type),
            )
            if node_id in nodes:
                duplicates.append(node_id)
                continue
            nodes[node_id] = node
        edges = [
            Edge(
                str(e.get("id") or ""),
                str(e.get("source") or ""),
                str(e.get("target") or ""),
                str(e.get("source_handle") or ""),
            )
            for e in data.get("edges") or []
        ]
        graph = cls(nodes, edges, duplicates)
        graph._link()
        return graph

    @classmethod
    def from_proto(cls, graph: flow_pb2.Graph) -> Graph:
        return cls.from_dict(graph_dict(graph))

    def _link(self) -> None:
        self.out_edges = {node_id: [] for node_id in self.nodes}
        self.in_forward = {node_id: [] for node_id in self.nodes}
        valid = [e for e in self.edges if e.source in self.nodes and e.target in self.nodes]
        for edge in valid:
            self.out_edges[edge.source].append(edge)
        starts = [n.id for n in self.nodes.values() if n.type == flow_pb2.NODE_TYPE_START]
        self.start_id = starts[0] if starts else ""
        # Back edges: depth-first from the start, an edge to a node still on the path closes a loop.
        if self.start_id:
            on_path: set[str] = set()
            seen: set[str] = set()
            stack: list[tuple[str, Iterator[Edge]]] = [(self.start_id, iter(self.out_edges[self.start_id]))]
            on_path.add(self.start_id)
            seen.add(self.start_id)
            while stack:
                node_id, edges = stack[-1]
                following = next(edges, None)
                if following is None:
                    stack.pop()
                    on_path.discard(node_id)
                    continue
                if following.target in on_path:
                    self.back_edges.add(edge_key(following))
                elif following.target not in seen:
                    seen.add(following.target)
                    on_path.add(following.target)
                    stack.append((following.target, iter(self.out_edges[following.target])))
        for edge in valid:
            if not self.is_back(edge):
                self.in_forward[edge.target].append(edge)

    def is_back(self, edge: Edge) -> bool:
        return edge_key(edge) in self.back_edges

    def region(self, node_id: str) -> frozenset[str]:
        """Nodes reachable from node_id (itself included): the round a back edge into node_id restarts."""
        found = self._regions.get(node_id)
        if found is None:
            seen = {node_id}
            todo = [node_id]
            while todo:
                for edge in self.out_edges.get(todo.pop(), ()):
                    if edge.target not in seen:
                        seen.add(edge.target)
                        todo.append(edge.target)
            found = self._regions[node_id] = frozenset(seen)
        return found

    def reachable(self) -> set[str]:
        return set(self.region(self.start_id)) if self.start_id else set()

    def ancestors(self, node_id: str) -> frozenset[str]:
        """Nodes with a path to node_id (node_id itself excluded unless it is on a loop)."""
        if self._ancestors is None:
            incoming: dict[str, list[str]] = {n: [] for n in self.nodes}
            for edge in self.edges:
                if edge.source in self.nodes and edge.target in self.nodes:
                    incoming[edge.target].append(edge.source)
            result = {}
            for target in self.nodes:
                seen: set[str] = set()
                todo = list(incoming[target])
                while todo:
                    current = todo.pop()
                    if current not in seen:
                        seen.add(current)
                        todo.extend(incoming[current])
                result[target] = frozenset(seen)
            self._ancestors = result
        return self._ancestors.get(node_id, frozenset())

    def answer_nodes(self) -> set[str]:
        """Nodes whose streamed text is the answer a person sees: output nodes and the LLMs they stream from."""
        found = set()
        for node in self.nodes.values():
            if node.type == flow_pb2.NODE_TYPE_OUTPUT:
                found.add(node.id)
                source = node.params.get("stream_from")
                if source:
                    found.add(str(source))
        return found

    def start_params(self) -> dict[str, Any]:
        return self.nodes[self.start_id].params if self.start_id else {}


# -- validation -----------------------------------------------------------------------------------------------------


def problem(
    code: str, message: str, *, node_id: str = "", edge_id: str = "", param: str = "", warning: bool = False
) -> flow_pb2.ValidationProblem:
    return flow_pb2.ValidationProblem(
        node_id=node_id,
        edge_id=edge_id,
        code=code,
        message=message,
        param=param,
        severity=WARNING if warning else ERROR,
    )


def validate(
    graph: Graph, *, max_nodes: int = 1000, template_limits: templates.Limits = templates.DEFAULT_LIMITS
) -> list[flow_pb2.ValidationProblem]:
    """Every problem of the graph, errors first (in graph order within each severity)."""
    found: list[flow_pb2.ValidationProblem] = []
    add = found.append
    if len(graph.nodes) > max_nodes:
        add(problem("GRAPH_TOO_LARGE", f"a flow has at most {max_nodes} nodes"))
    for node_id in graph.duplicates:
        add(problem("DUPLICATE_NODE_ID", f"node id {node_id!r} is used by more than one node", node_id=node_id))
    starts = [n for n in graph.nodes.values() if n.type == flow_pb2.NODE_TYPE_START]
    if not starts:
        add(problem("MISSING_START", "the flow needs a start node"))
    for extra in starts[1:]:
        add(problem("MULTIPLE_START", "a flow has exactly one start node", node_id=extra.id))
    if not any(n.type == flow_pb2.NODE_TYPE_END for n in graph.nodes.values()):
        add(
            problem(
                "MISSING_END",
                "the flow has no end node: runs finish when no node is left to run, with no outputs",
                warning=True,
            )
        )

    for node in graph.nodes.values():
        if not NODE_ID.match(node.id) or node.id in RESERVED:
            add(
                problem(
                    "INVALID_NODE_ID",
                    "a node id is 1-64 letters, digits and _ (not starting with a digit, "
                    f"not one of {', '.join(sorted(RESERVED))})",
                    node_id=node.id,
                )
            )
        if node.spec is None:
            add(problem("UNKNOWN_NODE_TYPE", f"unknown node type {node.type}", node_id=node.id))
            continue
        for issue in node.spec.validate(node.params):
            add(problem(issue.code, issue.message, node_id=node.id, param=issue.param, warning=issue.warning))

    seen_edges: set[str] = set()
    for edge in graph.edges:
        if edge.id and edge.id in seen_edges:
            add(problem("DUPLICATE_EDGE_ID", f"edge id {edge.id!r} is used more than once", edge_id=edge.id))
        seen_edges.add(edge.id)
        missing = [end for end in (edge.source, edge.target) if end not in graph.nodes]
        if missing:
            known = edge.target if edge.source in missing else edge.source
            add(
                problem(
                    "DANGLING_EDGE",
                    f"edge {edge.id or '?'} connects to a missing node {', '.join(repr(m) for m in missing)}",
                    edge_id=edge.id,
                    node_id=known if known in graph.nodes else "",
                )
            )
            continue
        source = graph.nodes[edge.source]
        if source.spec is None:
            continue
        handles = source.spec.handles(source.params)
        if handles is None:
            if edge.handle:
                add(
                    problem(
                        "UNKNOWN_HANDLE",
                        f"node {source.id!r} has no branches; the handle {edge.handle!r} is ignored",
                        node_id=source.id,
                        edge_id=edge.id,
                        warning=True,
                    )
                )
        elif edge.handle not in handles:
            what = "needs a source_handle" if not edge.handle else f"leaves through unknown handle {edge.handle!r}"
            add(
                problem(
                    "UNKNOWN_HANDLE",
                    f"edge {edge.id or '?'} {what}; node {source.id!r} branches to "
                    f"{', '.join(sorted(h or '(none)' for h in handles))}",
                    node_id=source.id,
                    edge_id=edge.id,
                )
            )
        if source.type == flow_pb2.NODE_TYPE_END:
            add(
                problem(
                    "EDGE_FROM_END",
                    "the end node ends the run; edges leaving it are never followed",
                    node_id=source.id,
                    edge_id=edge.id,
                    warning=True,
                )
            )
        if graph.nodes[edge.target].type == flow_pb2.NODE_TYPE_START:
            add(
                problem(
                    "EDGE_TO_START",
                    "the start node runs once; it cannot be the target of an edge",
                    node_id=edge.target,
                    edge_id=edge.id,
                )
            )

    if graph.start_id:
        reachable = graph.reachable()
        for node in graph.nodes.values():
            if node.id not in reachable:
                add(problem("UNREACHABLE_NODE", "no path from the start node leads to this node", node_id=node.id))
    found.extend(_cycles(graph))
    found.extend(_variables(graph, template_limits))
    found.sort(key=lambda p: 0 if p.severity == ERROR else 1)
    return found


def _cycles(graph: Graph) -> list[flow_pb2.ValidationProblem]:
    """A loop must have a way out: a branching node with an edge leaving the loop, or a node that waits for a
    person (a dialog loop: each round waits for the next message)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph.nodes:
        if root in index:
            continue
        work = [(root, iter(graph.out_edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node_id, edges = work[-1]
            edge = next(edges, None)
            if edge is not None:
                target = edge.target
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.out_edges.get(target, ()))))
                elif target in on_stack:
                    low[node_id] = min(low[node_id], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node_id])
            if low[node_id] == index[node_id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                components.append(component)
    problems = []
    order = {node_id: i for i, node_id in enumerate(graph.nodes)}
    for component in components:
        members = set(component)
        looped = len(component) > 1 or any(e.target == component[0] for e in graph.out_edges.get(component[0], ()))
        if not looped:
            continue
        exit_found = False
        for node_id in members:
            node = graph.nodes[node_id]
            if node.spec is None:
                exit_found = True  # reported as an unknown type already
                break
            if node.spec.interactive(node.params):
                exit_found = True
                break
            if node.spec.handles(node.params) is not None and any(
                e.target not in members for e in graph.out_edges.get(node_id, ())
            ):
                exit_found = True
                break
        if not exit_found:
            first = min(component, key=order.__getitem__)
            path = " -> ".join(sorted(component, key=order.__getitem__))
            problems.append(
                problem(
                    "CYCLE",
                    f"the loop {path} has no exit: add a condition with a branch leaving it, or an input node",
                    node_id=first,
                )
            )
    return problems


def _variables(graph: Graph, template_limits: templates.Limits) -> list[flow_pb2.ValidationProblem]:
    problems = []
    run_inputs = {v["name"] for v in start_variables(graph.start_params())}
    for name in sorted(run_inputs & set(graph.nodes)):
        problems.append(
            problem(
                "SHADOWED_VARIABLE",
                f"the start variable {name!r} has the id of a node; {{{{%s}}}} reads the node" % name,
                node_id=graph.start_id,
                warning=True,
            )
        )
    for node in graph.nodes.values():
        if node.spec is None:
            continue
        upstream = graph.ancestors(node.id)
        checks: list[tuple[str, list[tuple[str, str | None]]]] = []
        for param, text in node.spec.template_params(node.params):
            try:
                checks.append((param, [(r.name, r.key) for r in templates.references(text, template_limits)]))
            except templates.TemplateFailed as exc:
                problems.append(problem("INVALID_TEMPLATE", str(exc), node_id=node.id, param=param))
        for param, source in node.spec.expression_params(node.params):
            try:
                checks.append((param, expr.names(source)))
            except expr.ExpressionError as exc:
                problems.append(problem("INVALID_EXPRESSION", str(exc), node_id=node.id, param=param))
        if node.type == flow_pb2.NODE_TYPE_OUTPUT and node.params.get("stream_from"):
            source = str(node.params["stream_from"])
            target = graph.nodes.get(source)
            if target is None or target.type != flow_pb2.NODE_TYPE_LLM or source not in upstream:
                problems.append(
                    problem(
                        "UNKNOWN_VARIABLE",
                        f"stream_from {source!r} is not an LLM node upstream",
                        node_id=node.id,
                        param="stream_from",
                    )
                )
        for param, refs in checks:
            for name, key in refs:
                message = _check_reference(graph, node, upstream, run_inputs, name, key)
                if message:
                    problems.append(problem("UNKNOWN_VARIABLE", message, node_id=node.id, param=param))
    return problems


def _check_reference(
    graph: Graph, node: Node, upstream: frozenset[str], run_inputs: set[str], name: str, key: str | None
) -> str:
    if name == "sys":
        return "" if key is None or key in SYS_KEYS else f"sys.{key} is not defined ({', '.join(sorted(SYS_KEYS))})"
    if name in graph.nodes:
        source = graph.nodes[name]
        if name not in upstream:
            return f"{{{{{name}{'.' + key if key else ''}}}}}: node {name!r} does not run before this node"
        if key is not None and source.spec is not None:
            outputs = source.spec.outputs(source.params)
            if outputs is not None and key not in outputs:
                return (
                    f"{{{{{name}.{key}}}}}: node {name!r} has no output {key!r} "
                    f"(it has {', '.join(sorted(outputs)) or 'none'})"
                )
        return ""
    if name in run_inputs:
        return ""
    return f"{{{{{name}}}}} is not defined: not a node id, a start variable or sys"


def errors(problems: Iterable[flow_pb2.ValidationProblem]) -> list[flow_pb2.ValidationProblem]:
    return [p for p in problems if p.severity == ERROR]
