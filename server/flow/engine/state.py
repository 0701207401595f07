"""A run's scheduler state: what each node produced, which edges arrived where, what is ready, running or waiting
for a person. Pure data and rules (see graph.py for the semantics), serialised into the run's row after every
step, so the run continues from here on any replica."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from typecase.server.flow.graph import Graph, edge_key


@dataclass
class Waiting:
    node_id: str
    request: dict[str, Any]  # InputRequired as proto JSON
    partial: dict[str, Any]  # outputs the node produced before asking
    attempt: int

    def to_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "request": self.request, "partial": self.partial, "attempt": self.attempt}


@dataclass
class RunState:
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> its latest outputs
    arrived: dict[str, dict[str, bool]] = field(default_factory=dict)  # node id -> {edge key: taken}
    resolved: set[str] = field(default_factory=set)  # ran or skipped in the current round
    skipped: set[str] = field(default_factory=set)
    ready: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    prefill: dict[str, Any] | None = None
    run_outputs: dict[str, Any] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)  # every node that executed at least once
    history: list[dict[str, str]] = field(default_factory=list)  # chat history for LLM nodes (chat runs)

    # -- persistence ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "arrived": self.arrived,
            "resolved": sorted(self.resolved),
            "skipped": sorted(self.skipped),
            # Nodes running now did not finish: after a crash they run again.
            "ready": [*self.running, *self.ready],
            "waiting": [w.to_dict() for w in self.waiting],
            "attempts": self.attempts,
            "steps": self.steps,
            "prefill": self.prefill,
            "run_outputs": self.run_outputs,
            "ran": sorted(self.ran),
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunState:
        data = data or {}
        return cls(
            outputs=dict(data.get("outputs") or {}),
            arrived={k: dict(v) for k, v in (data.get("arrived") or {}).items()},
            resolved=set(data.get("resolved") or ()),
            skipped=set(data.get("skipped") or ()),
            ready=list(data.get("ready") or ()),
            waiting=[
                Waiting(w["node_id"], w.get("request") or {}, w.get("partial") or {}, int(w.get("attempt") or 1))
                for w in data.get("waiting") or ()
            ],
            attempts={k: int(v) for k, v in (data.get("attempts") or {}).items()},
            steps=int(data.get("steps") or 0),
            prefill=data.get("prefill"),
            run_outputs=dict(data.get("run_outputs") or {}),
            ran=set(data.get("ran") or ()),
            history=list(data.get("history") or ()),
        )

    @classmethod
    def initial(
        cls, graph: Graph, prefill: dict[str, Any] | None = None, history: list[dict[str, str]] | None = None
    ) -> RunState:
        return cls(ready=[graph.start_id], prefill=prefill, history=list(history or ()))

    # -- scheduling ----------------------------------------------------------------------------------------------
    def _scheduled(self, node_id: str) -> bool:
        return node_id in self.ready or node_id in self.running or any(w.node_id == node_id for w in self.waiting)

    def take_ready(self) -> str:
        node_id = self.ready.pop(0)
        self.running.append(node_id)
        self.attempts[node_id] = self.attempts.get(node_id, 0) + 1
        self.steps += 1
        return node_id

    def wait(self, node_id: str, request: dict[str, Any], partial: dict[str, Any]) -> Waiting:
        self.running.remove(node_id)
        waiting = Waiting(node_id, request, partial, self.attempts.get(node_id, 1))
        self.waiting.append(waiting)
        return waiting

    def take_waiting(self, node_id: str) -> Waiting:
        for i, waiting in enumerate(self.waiting):
            if waiting.node_id == node_id:
                del self.waiting[i]
                self.running.append(node_id)
                return waiting
        raise KeyError(node_id)

    def complete(self, graph: Graph, node_id: str, outputs: dict[str, Any], handles: list[str] | None) -> list[str]:
        """Record a finished node and follow its edges; returns the nodes skipped as a consequence."""
        if node_id in self.running:
            self.running.remove(node_id)
        self.outputs[node_id] = outputs
        self.resolved.add(node_id)
        self.ran.add(node_id)
        self.skipped.discard(node_id)
        skipped: list[str] = []
        restart = []
        for edge in graph.out_edges.get(node_id, ()):
            taken = handles is None or edge.handle in handles
            if graph.is_back(edge):
                if taken:
                    restart.append(edge.target)
                continue
            self.arrived.setdefault(edge.target, {})[edge_key(edge)] = taken
            self._check(graph, edge.target, skipped)
        # Loops restart last: what this round skipped inside the loop gets its chance in the next round.
        for target in restart:
            self._restart(graph, target)
        return skipped

    def _restart(self, graph: Graph, target: str) -> None:
        """A back edge was taken: the loop from `target` starts a new round."""
        region = graph.region(target)
        for node_id in region:
            self.resolved.discard(node_id)
            self.skipped.discard(node_id)
            arrivals = self.arrived.get(node_id)
            if arrivals:
                for edge in graph.in_forward.get(node_id, ()):
                    if edge.source in region:
                        arrivals.pop(edge_key(edge), None)
        if not self._scheduled(target):
            self.ready.append(target)

    def _check(self, graph: Graph, node_id: str, skipped: list[str]) -> None:
        todo = [node_id]
        while todo:
            current = todo.pop()
            if current in self.resolved or self._scheduled(current):
                continue
            arrivals = self.arrived.get(current, {})
            incoming = graph.in_forward.get(current, ())
            if any(edge_key(edge) not in arrivals for edge in incoming):
                continue
            if any(arrivals.get(edge_key(edge)) for edge in incoming):
                self.ready.append(current)
                continue
            # Every way in was skipped: so is this node, and everything only it leads to.
            self.resolved.add(current)
            self.skipped.add(current)
            skipped.append(current)
            for edge in graph.out_edges.get(current, ()):
                if not graph.is_back(edge):
                    self.arrived.setdefault(edge.target, {})[edge_key(edge)] = False
                    todo.append(edge.target)

    def abort_running(self) -> list[str]:
        """Nodes running now go back to ready (a release: they run again wherever the run continues)."""
        running, self.running = self.running, []
        self.ready[:0] = running
        return running
