"""FlowCore: what the flow RPC mixins share: the engine and HTTP guard a FlowService holds, its lifecycle, the
access checks (flow, version, run), graph validation (cached) and the checks of names and texts.

FlowService (service.py: flows and versions) is assembled from mixins on this base (run_rpcs.py: runs, and the
Python API for chat and tools), so that each module holds one group of RPCs and mypy sees what they use.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import grpc
from sqlalchemy import inspect

from typecase.server.flow import graph as graphs
from typecase.server.flow import templates
from typecase.server.flow.convert import (
    RUN_AS_NAMES,
    flow_message,
)
from typecase.server.flow.engine.manager import Engine
from typecase.server.flow.errors import FlowInvalid
from typecase.server.flow.graph import Graph
from typecase.server.flow.models import (
    ONLINE,
    RUN_AS_OWNER,
    FlowRow,
    FlowRunRow,
    FlowVersionRow,
)
from typecase.server.flow.nodes.base import Services
from typecase.server.flow.nodes.http import HttpGuard
from typecase.server.flow.nodes.knowledge import kb_ids
from typecase.server.flow.redact import redact_graph
from typecase.server.infra import sharing
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.ports import Generation, Knowledge
from typecase.v1 import flow_pb2

MAX_NAME = 255
MAX_DESCRIPTION = 10_000
MAX_LOGO = 512 * 1024


def permission_denied(what: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", what)


class FlowCore:
    def __init__(self, resources, llm: Generation | None, knowledge: Knowledge | None, audit, settings, sandbox=None):
        self.db = resources.db
        self.cache = resources.cache
        self.llm = llm
        self.knowledge = knowledge
        self.audit = audit
        self.settings = settings
        self.http = HttpGuard(settings)
        self.engine = Engine(
            self.db, self.cache, settings, Services(settings, llm, knowledge, self.http, sandbox=sandbox)
        )
        self._validated: OrderedDict[tuple[str, Any], list[flow_pb2.ValidationProblem]] = OrderedDict()
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        for task in list(self._background):
            task.cancel()
        await self.http.aclose()

    def _detach(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- access ------------------------------------------------------------------------------------------------
    @staticmethod
    def _can_edit(row: FlowRow) -> bool:
        """Owner, admin, or an EDIT grant `_flow` found (kept on the row's state for this session)."""
        me = caller.current()
        return me.is_admin or row.owner_id == me.user_id or inspect(row).info.get("level") == sharing.EDIT

    async def _flow(self, session, flow_id: str, *, edit: bool = False, own: bool = False) -> FlowRow:
        if not flow_id:
            raise invalid_argument("flow_id", "required")
        row = await session.get(FlowRow, flow_id)
        if row is None:
            raise not_found("flow", flow_id)
        caller.check_key_resource(sharing.FLOW, flow_id)
        me = caller.current()
        held = await sharing.access_level(session, sharing.FLOW, flow_id, row.owner_id, me)
        if held is None and row.status != ONLINE:
            raise not_found("flow", flow_id)  # a draft is seen by its owner and those it is shared with
        inspect(row).info["level"] = held
        if (edit or own) and held is None:
            raise permission_denied("only the flow's owner or an admin can change it")
        # An editor may not change what runs with the owner's rights, nor what is live, delete or re-share.
        if own or (edit and row.run_as == RUN_AS_OWNER):
            sharing.require(held, sharing.OWNER, "flow", sharing.FLOW, flow_id)
        elif edit:
            sharing.require(held, sharing.EDIT, "flow", sharing.FLOW, flow_id)
        return row

    def _require_editor(self, row: FlowRow, what: str) -> None:
        if not self._can_edit(row):
            raise permission_denied(f"only the flow's editors can {what}")

    @staticmethod
    def _require_owner(row: FlowRow) -> None:
        sharing.require(inspect(row).info.get("level"), sharing.OWNER, "flow", sharing.FLOW, row.id)

    async def _version(self, session, flow: FlowRow, version_id: str) -> FlowVersionRow:
        if not version_id:
            raise invalid_argument("version_id", "required")
        row = await session.get(FlowVersionRow, version_id)
        if row is None or row.flow_id != flow.id:
            raise not_found("flow version", version_id)
        return row

    async def _run(self, run_id: str) -> FlowRunRow:
        if not run_id:
            raise invalid_argument("run_id", "required")
        row = await self.engine.get_row(run_id)
        if row is None:
            raise not_found("run", run_id)
        caller.check_visible("run", run_id, row.owner_id)
        caller.check_key_resource(sharing.FLOW, row.flow_id)
        return row

    # -- validation --------------------------------------------------------------------------------------------
    def _check_graph_size(self, graph: dict[str, Any], field: str) -> None:
        if len(graph.get("nodes") or ()) > self.settings.flow_max_nodes:
            raise invalid_argument(field, f"at most {self.settings.flow_max_nodes} nodes")
        if len(graph.get("edges") or ()) > self.settings.flow_max_nodes * 4:
            raise invalid_argument(field, f"at most {self.settings.flow_max_nodes * 4} edges")
        limit = self.settings.flow_code_max_chars  # compiled by validation: bounded before it gets there
        for i, node in enumerate(graph.get("nodes") or ()):
            code = (node.get("params") or {}).get("code") if isinstance(node, dict) else None
            if isinstance(code, str) and len(code) > limit:
                raise invalid_argument(
                    f"{field}.nodes[{i}].params.code", f"at most {limit} characters (flow_code_max_chars)"
                )

    async def validate_graph(
        self, data: dict[str, Any], cache_key: tuple | None = None, as_principal: caller.Principal | None = None
    ) -> list[flow_pb2.ValidationProblem]:
        """Every problem of a graph: its structure, then models and knowledge bases that do not exist (as seen
        by `as_principal`, default the caller)."""
        if cache_key is not None and cache_key in self._validated:
            self._validated.move_to_end(cache_key)
            return self._validated[cache_key]
        token = caller.bind(as_principal) if as_principal is not None else None
        try:
            problems = await self._validate(data)
        finally:
            if token is not None:
                caller.bind_reset(token)
        if cache_key is not None:
            self._validated[cache_key] = problems
            while len(self._validated) > 256:
                self._validated.popitem(last=False)
        return problems

    async def _validate(self, data: dict[str, Any]) -> list[flow_pb2.ValidationProblem]:
        graph = Graph.from_dict(data)
        # In a thread: validation parses every template and compiles code, which a large graph makes slow.
        problems = await asyncio.to_thread(
            graphs.validate,
            graph,
            max_nodes=self.settings.flow_max_nodes,
            template_limits=templates.Limits.from_settings(self.settings),
        )
        for node in graph.nodes.values():
            if node.spec is not None and (why := node.spec.unavailable(self.engine.services)):
                problems.append(
                    graphs.problem(f"{node.spec.kind.upper()}_UNAVAILABLE", why, node_id=node.id, warning=True)
                )
            if node.type == flow_pb2.NODE_TYPE_LLM and node.params.get("model_id") and self.llm is not None:
                try:
                    await self.llm.get_model(str(node.params["model_id"]))
                except TypecaseError:
                    problems.append(
                        graphs.problem(
                            "MODEL_NOT_FOUND",
                            f"model {node.params['model_id']!r} not found",
                            node_id=node.id,
                            param="model_id",
                        )
                    )
            if node.type == flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL and self.knowledge is not None:
                for i, kb_id in enumerate(kb_ids(node.params)):
                    try:
                        await self.knowledge.get_knowledge_base(kb_id)
                    except TypecaseError:
                        problems.append(
                            graphs.problem(
                                "KB_NOT_FOUND",
                                f"knowledge base {kb_id!r} not found",
                                node_id=node.id,
                                param=f"kb_ids.{i}",
                            )
                        )
        problems.sort(key=lambda p: 0 if p.severity == graphs.ERROR else 1)
        return problems

    async def _require_valid(self, version: FlowVersionRow, flow: FlowRow) -> Graph:
        """The version's graph, or FLOW_INVALID. Models and knowledge bases are checked with the flow owner's
        rights: runs of a published flow reach them with those rights too."""
        owner = await self.engine.services.with_groups(caller.Principal(flow.owner_id, flow.owner_role or "user"))
        problems = await self.validate_graph(version.graph, (version.id, version.update_time), owner)
        errors = graphs.errors(problems)
        if errors:
            raise FlowInvalid(errors, flow.id)
        return Graph.from_dict(version.graph)

    # -- flows -------------------------------------------------------------------------------------------------
    def _clean_name(self, name: str, field: str) -> str:
        name = name.strip()
        if not name:
            raise invalid_argument(field, "required")
        if len(name) > MAX_NAME:
            raise invalid_argument(field, f"at most {MAX_NAME} characters")
        return name

    def _clean_text(self, value: str, field: str, limit: int) -> str:
        if len(value) > limit:
            raise invalid_argument(field, f"at most {limit} characters")
        return value

    @staticmethod
    def _run_as(value: flow_pb2.FlowRunAs, field: str) -> str:
        name = RUN_AS_NAMES.get(value)
        if name is None:
            raise invalid_argument(field, "must be FLOW_RUN_AS_CALLER or FLOW_RUN_AS_OWNER")
        return name

    async def _current_graph(self, session, row: FlowRow) -> dict[str, Any]:
        version = await session.get(FlowVersionRow, row.current_version_id)
        return version.graph if version is not None else {}

    async def get_flow(self, flow_id: str) -> flow_pb2.Flow:
        """The flow with its current graph, if the caller may see it (Python API); secret params are redacted
        unless the caller may edit the flow."""
        async with self.db.session() as session:
            row = await self._flow(session, flow_id)
            graph = await self._current_graph(session, row)
        return flow_message(row, graph if self._can_edit(row) else redact_graph(graph))
