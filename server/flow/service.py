"""FlowService: flows and their versions (CRUD, publish), validation, and runs on the durable engine.

Python API for other domains (chat), no gRPC hop; both run under the caller's principal like the RPCs:
  get_flow(flow_id) -> Flow                       (NOT_FOUND unless visible to the caller)
  run_for_chat(flow_id=..., session_id=..., question=..., ...) -> async iterator of RunFlowResponse
See run_for_chat for how a chat turn maps onto runs.

Visibility: a flow is visible to its owner, admins, those it is shared with (infra/sharing.py: a draft shared at
any level is seen and run like a published flow) and (once online) everyone; only its owner or an admin (its
editors) may change it or see its versions. Everyone else sees the current graph with its secret params redacted
(flow/redact.py). A run is visible to the user who started it and to admins.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from typecase.server.flow import graph as graphs
from typecase.server.flow import templates
from typecase.server.flow.convert import (
    FLOW_STATUS_NAMES,
    RUN_AS_NAMES,
    RUN_STATUS_NAMES,
    flow_message,
    run_message,
    version_message,
)
from typecase.server.flow.engine.manager import Engine
from typecase.server.flow.engine.state import RunState
from typecase.server.flow.errors import FlowInvalid, not_editable, not_waiting
from typecase.server.flow.graph import Graph, graph_dict
from typecase.server.flow.models import (
    DRAFT,
    ENDED,
    ONLINE,
    RUNNING,
    WAITING,
    FlowRow,
    FlowRunNodeRow,
    FlowRunRow,
    FlowVersionRow,
)
from typecase.server.flow.node_types import node_type_infos
from typecase.server.flow.nodes import SPECS
from typecase.server.flow.nodes.base import Services
from typecase.server.flow.nodes.http import HttpGuard
from typecase.server.flow.nodes.knowledge import kb_ids
from typecase.server.flow.nodes.start import chat_files, run_inputs, with_files
from typecase.server.flow.redact import redact_graph
from typecase.server.infra import sharing
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import LIKE_ESCAPE, like_pattern, mask_paths, struct_dict
from typecase.server.rpc.paging import decode_token, encode_token, page_size
from typecase.server.rpc.ports import Generation, Knowledge
from typecase.v1 import flow_pb2, flow_pb2_grpc

log = logging.getLogger("typecase.flow")

FLOW_FIELDS = {"name", "description", "logo", "graph", "run_as"}
VERSION_FIELDS = {"name", "description", "graph"}
MAX_NAME = 255
MAX_DESCRIPTION = 10_000
MAX_LOGO = 512 * 1024


def permission_denied(what: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", what)


class FlowService(flow_pb2_grpc.FlowServiceServicer):
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
        me = caller.current()
        return me.is_admin or row.owner_id == me.user_id

    async def _flow(self, session, flow_id: str, *, edit: bool = False) -> FlowRow:
        if not flow_id:
            raise invalid_argument("flow_id", "required")
        row = await session.get(FlowRow, flow_id)
        if row is None:
            raise not_found("flow", flow_id)
        caller.check_key_resource(sharing.FLOW, flow_id)
        if self._can_edit(row):
            return row
        if row.status != ONLINE and not await sharing.access_level(
            session, sharing.FLOW, flow_id, row.owner_id, caller.current()
        ):
            raise not_found("flow", flow_id)  # a draft is seen by its owner and those it is shared with
        if edit:
            raise permission_denied("only the flow's owner or an admin can change it")
        return row

    def _require_editor(self, row: FlowRow, what: str) -> None:
        if not self._can_edit(row):
            raise permission_denied(f"only the flow's owner or an admin can {what}")

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
        owner = caller.Principal(flow.owner_id, flow.owner_role or caller.ROLE_USER)
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
    def _run_as(value: int, field: str) -> str:
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

    async def CreateFlow(self, request, context):
        me = caller.require_permission("flows.create")
        given = request.flow
        name = self._clean_name(given.name, "flow.name")
        graph = graph_dict(given.graph)
        self._check_graph_size(graph, "flow.graph")
        now = utcnow()
        row = FlowRow(
            id=new_id(),
            owner_id=me.user_id,
            owner_role=me.role,
            name=name,
            description=self._clean_text(given.description, "flow.description", MAX_DESCRIPTION),
            logo=self._clean_text(given.logo, "flow.logo", MAX_LOGO),
            status=DRAFT,
            run_as=self._run_as(given.run_as, "flow.run_as"),
            create_time=now,
            update_time=now,
        )
        version = FlowVersionRow(
            id=new_id(),
            flow_id=row.id,
            name="v1",
            description="",
            graph=graph,
            owner_id=me.user_id,
            from_version_id="",
            create_time=now,
            update_time=now,
        )
        row.current_version_id = version.id
        try:
            async with self.db.session() as session:
                session.add_all([row, version])
        except IntegrityError:
            raise TypecaseError(
                grpc.StatusCode.ALREADY_EXISTS,
                "ALREADY_EXISTS",
                f"you already have a flow named {name!r}",
                {"name": name},
            ) from None
        await self.audit.record(
            "flow.create", actor_id=me.user_id, resource_type="flow", resource_id=row.id, detail={"name": name}
        )
        return flow_pb2.CreateFlowResponse(flow=flow_message(row, graph))

    async def ListFlows(self, request, context):
        me = caller.current()
        limit = page_size(request.page_size)
        conditions = []
        if not me.is_admin:
            conditions.append(
                or_(
                    FlowRow.owner_id == me.user_id,
                    FlowRow.status == ONLINE,
                    FlowRow.id.in_(sharing.granted_ids(sharing.FLOW, me)),
                )
            )
        if request.owner_id:
            conditions.append(FlowRow.owner_id == request.owner_id)
        if request.status:
            status = FLOW_STATUS_NAMES.get(request.status)
            if status is None:
                raise invalid_argument("status", "unknown status")
            conditions.append(FlowRow.status == status)
        if request.keyword.strip():
            pattern = like_pattern(request.keyword.strip())
            conditions.append(
                or_(
                    func.lower(FlowRow.name).like(pattern, escape=LIKE_ESCAPE),
                    func.lower(FlowRow.description).like(pattern, escape=LIKE_ESCAPE),
                )
            )
        position = decode_token(request.page_token)
        page_conditions = list(conditions)
        if position is not None:
            try:
                at = datetime.fromisoformat(position["t"])
                last_id = str(position["id"])
            except (KeyError, TypeError, ValueError):
                raise invalid_argument("page_token", "not a page token returned by this API") from None
            page_conditions.append(or_(FlowRow.update_time < at, and_(FlowRow.update_time == at, FlowRow.id < last_id)))
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(FlowRow)
                    .where(*page_conditions)
                    .order_by(FlowRow.update_time.desc(), FlowRow.id.desc())
                    .limit(limit + 1)
                )
            )
            total = await session.scalar(select(func.count()).select_from(FlowRow).where(*conditions))
        more = len(rows) > limit
        rows = rows[:limit]
        token = encode_token(t=rows[-1].update_time.isoformat(), id=rows[-1].id) if more and rows else ""
        return flow_pb2.ListFlowsResponse(
            flows=[flow_message(r) for r in rows], next_page_token=token, total_size=total or 0
        )

    async def GetFlow(self, request, context):
        return flow_pb2.GetFlowResponse(flow=await self.get_flow(request.flow_id))

    async def UpdateFlow(self, request, context):
        me = caller.current()
        given = request.flow
        paths = mask_paths(request.update_mask, given, FLOW_FIELDS, "flow")
        async with self.db.session() as session:
            row = await self._flow(session, given.id, edit=True)
            if row.status == ONLINE and paths:
                raise not_editable(row.id)
            now = utcnow()
            if "name" in paths:
                row.name = self._clean_name(given.name, "flow.name")
            if "description" in paths:
                row.description = self._clean_text(given.description, "flow.description", MAX_DESCRIPTION)
            if "logo" in paths:
                row.logo = self._clean_text(given.logo, "flow.logo", MAX_LOGO)
            if "run_as" in paths:
                row.run_as = self._run_as(given.run_as, "flow.run_as")
            version = await session.get(FlowVersionRow, row.current_version_id)
            if "graph" in paths:
                graph = graph_dict(given.graph)
                self._check_graph_size(graph, "flow.graph")
                version.graph = graph
                version.update_time = now
            if paths:
                row.update_time = now
            try:
                await session.flush()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ALREADY_EXISTS",
                    f"you already have a flow named {row.name!r}",
                    {"name": row.name},
                ) from None
            message = flow_message(row, version.graph if version is not None else {})
        if paths:
            await self.audit.record(
                "flow.update",
                actor_id=me.user_id,
                resource_type="flow",
                resource_id=row.id,
                detail={"fields": sorted(paths)},
            )
        return flow_pb2.UpdateFlowResponse(flow=message)

    async def DeleteFlow(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row = await self._flow(session, request.flow_id, edit=True)
            live = list(
                await session.scalars(
                    select(FlowRunRow).where(FlowRunRow.flow_id == row.id, FlowRunRow.status.in_((RUNNING, WAITING)))
                )
            )
        for run in live:
            try:
                await self.engine.request_stop(run)
            except Exception as exc:
                log.warning("flow: could not stop run %s of deleted flow %s: %s", run.id, row.id, exc)
        for run in live:
            await self.engine.wait_ended(run.id, 1.0)
        async with self.db.session() as session:
            run_ids = select(FlowRunRow.id).where(FlowRunRow.flow_id == row.id).scalar_subquery()
            await session.execute(delete(FlowRunNodeRow).where(FlowRunNodeRow.run_id.in_(run_ids)))
            await session.execute(delete(FlowRunRow).where(FlowRunRow.flow_id == row.id))
            await session.execute(delete(FlowVersionRow).where(FlowVersionRow.flow_id == row.id))
            await session.execute(delete(FlowRow).where(FlowRow.id == row.id))
            await sharing.forget(session, sharing.FLOW, row.id)
        await self.audit.record(
            "flow.delete", actor_id=me.user_id, resource_type="flow", resource_id=row.id, detail={"name": row.name}
        )
        return flow_pb2.DeleteFlowResponse()

    async def PublishFlow(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row = await self._flow(session, request.flow_id, edit=True)
            version = await self._version(session, row, request.version_id or row.current_version_id)
        await self._require_valid(version, row)
        now = utcnow()
        async with self.db.session() as session:
            row = await self._flow(session, request.flow_id, edit=True)
            row.current_version_id = version.id
            row.status = ONLINE
            row.publish_time = now
            row.update_time = now
            message = flow_message(row, version.graph)
        await self.audit.record(
            "flow.publish",
            actor_id=me.user_id,
            resource_type="flow",
            resource_id=row.id,
            detail={"version_id": version.id},
        )
        return flow_pb2.PublishFlowResponse(flow=message)

    async def UnpublishFlow(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row = await self._flow(session, request.flow_id, edit=True)
            changed = row.status != DRAFT
            if changed:
                row.status = DRAFT
                row.update_time = utcnow()
            message = flow_message(row, await self._current_graph(session, row))
        if changed:
            await self.audit.record("flow.unpublish", actor_id=me.user_id, resource_type="flow", resource_id=row.id)
        return flow_pb2.UnpublishFlowResponse(flow=message)

    async def ValidateFlow(self, request, context):
        async with self.db.session() as session:
            row = await self._flow(session, request.flow_id)
            if request.HasField("graph"):
                data = graph_dict(request.graph)
                self._check_graph_size(data, "graph")
            else:
                if request.version_id and request.version_id != row.current_version_id:
                    self._require_editor(row, "see its versions")
                data = (await self._version(session, row, request.version_id or row.current_version_id)).graph
        problems = await self.validate_graph(data)
        return flow_pb2.ValidateFlowResponse(valid=not graphs.errors(problems), problems=problems)

    async def ListNodeTypes(self, request, context):
        # Any signed-in user may build flows, so the catalogue is not restricted further.
        return flow_pb2.ListNodeTypesResponse(node_types=node_type_infos(self.engine.services))

    # -- versions ----------------------------------------------------------------------------------------------
    async def CreateFlowVersion(self, request, context):
        me = caller.current()
        given = request.version
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id, edit=True)
            if given.graph.nodes or given.graph.edges:
                graph = graph_dict(given.graph)
                self._check_graph_size(graph, "version.graph")
                source = given.from_version_id
                if source:
                    await self._version(session, flow, source)
            else:
                source = given.from_version_id or flow.current_version_id
                graph = (await self._version(session, flow, source)).graph
            name = given.name.strip()
            if not name:
                count = await session.scalar(
                    select(func.count()).select_from(FlowVersionRow).where(FlowVersionRow.flow_id == flow.id)
                )
                name = f"v{(count or 0) + 1}"
            now = utcnow()
            version = FlowVersionRow(
                id=new_id(),
                flow_id=flow.id,
                name=self._clean_name(name, "version.name"),
                description=self._clean_text(given.description, "version.description", MAX_DESCRIPTION),
                graph=graph,
                from_version_id=source or "",
                owner_id=me.user_id,
                create_time=now,
                update_time=now,
            )
            session.add(version)
            try:
                await session.flush()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ALREADY_EXISTS",
                    f"the flow already has a version named {name!r}",
                    {"name": name},
                ) from None
            message = version_message(version, flow.current_version_id)
        await self.audit.record(
            "flow.version.create",
            actor_id=me.user_id,
            resource_type="flow_version",
            resource_id=version.id,
            detail={"flow_id": flow.id, "name": version.name},
        )
        return flow_pb2.CreateFlowVersionResponse(version=message)

    async def ListFlowVersions(self, request, context):
        limit = page_size(request.page_size)
        position = decode_token(request.page_token)
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id)
            self._require_editor(flow, "see its versions")
            conditions = [FlowVersionRow.flow_id == flow.id]
            if position is not None:
                conditions.append(FlowVersionRow.id < str(position.get("id", "")))
            rows = list(
                await session.scalars(
                    select(FlowVersionRow).where(*conditions).order_by(FlowVersionRow.id.desc()).limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return flow_pb2.ListFlowVersionsResponse(
            versions=[version_message(r, flow.current_version_id, with_graph=False) for r in rows],
            next_page_token=encode_token(id=rows[-1].id) if more and rows else "",
        )

    async def GetFlowVersion(self, request, context):
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id)
            self._require_editor(flow, "see its versions")
            version = await self._version(session, flow, request.version_id)
        return flow_pb2.GetFlowVersionResponse(version=version_message(version, flow.current_version_id))

    async def UpdateFlowVersion(self, request, context):
        me = caller.current()
        given = request.version
        paths = mask_paths(request.update_mask, given, VERSION_FIELDS, "version")
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id, edit=True)
            version = await self._version(session, flow, given.id)
            if paths and flow.status == ONLINE and version.id == flow.current_version_id:
                raise not_editable(flow.id)
            now = utcnow()
            if "name" in paths:
                version.name = self._clean_name(given.name, "version.name")
            if "description" in paths:
                version.description = self._clean_text(given.description, "version.description", MAX_DESCRIPTION)
            if "graph" in paths:
                graph = graph_dict(given.graph)
                self._check_graph_size(graph, "version.graph")
                version.graph = graph
            if paths:
                version.update_time = now
                if version.id == flow.current_version_id:
                    flow.update_time = now
            try:
                await session.flush()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ALREADY_EXISTS",
                    f"the flow already has a version named {version.name!r}",
                    {"name": version.name},
                ) from None
            message = version_message(version, flow.current_version_id)
        if paths:
            await self.audit.record(
                "flow.version.update",
                actor_id=me.user_id,
                resource_type="flow_version",
                resource_id=version.id,
                detail={"flow_id": flow.id, "fields": sorted(paths)},
            )
        return flow_pb2.UpdateFlowVersionResponse(version=message)

    async def DeleteFlowVersion(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id, edit=True)
            version = await self._version(session, flow, request.version_id)
            if version.id == flow.current_version_id:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "FAILED_PRECONDITION",
                    "the current version cannot be deleted: make another version current first",
                    {"version_id": version.id},
                )
            await session.delete(version)
        await self.audit.record(
            "flow.version.delete",
            actor_id=me.user_id,
            resource_type="flow_version",
            resource_id=version.id,
            detail={"flow_id": flow.id},
        )
        return flow_pb2.DeleteFlowVersionResponse()

    async def SetCurrentVersion(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id, edit=True)
            version = await self._version(session, flow, request.version_id)
        if flow.status == ONLINE:
            await self._require_valid(version, flow)
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id, edit=True)
            flow.current_version_id = version.id
            flow.update_time = utcnow()
            message = flow_message(flow, version.graph)
        await self.audit.record(
            "flow.version.set_current",
            actor_id=me.user_id,
            resource_type="flow",
            resource_id=flow.id,
            detail={"version_id": version.id},
        )
        return flow_pb2.SetCurrentVersionResponse(flow=message)

    # -- runs --------------------------------------------------------------------------------------------------
    async def _prepare_run(self, flow_id: str, version_id: str) -> tuple[FlowRow, FlowVersionRow, Graph]:
        async with self.db.session() as session:
            flow = await self._flow(session, flow_id)
            if not self._can_edit(flow) and version_id and version_id != flow.current_version_id:
                raise permission_denied("only the flow's editors can run versions other than the current one")
            version = await self._version(session, flow, version_id or flow.current_version_id)
        graph = await self._require_valid(version, flow)
        return flow, version, graph

    def _new_run(self, flow: FlowRow, version: FlowVersionRow, inputs: dict[str, Any], session_id: str) -> FlowRunRow:
        me = caller.current()
        return FlowRunRow(
            id=new_id(),
            flow_id=flow.id,
            version_id=version.id,
            owner_id=me.user_id,
            owner_role=me.role,
            flow_owner_id=flow.owner_id,
            flow_owner_role=flow.owner_role,
            run_as=flow.run_as,
            session_id=session_id,
            inputs=inputs,
            outputs={},
            graph=version.graph,
        )

    async def _read(self, execution, after_seq: int, stop_on_disconnect: bool):
        ended = False
        try:
            async for entry in execution.live.read(after_seq):
                if entry.message is None:  # the run left this replica (shutdown): the client reconnects
                    ended = True
                    return
                ended = entry.terminal
                yield entry
        finally:
            if not ended and stop_on_disconnect:
                self.engine.stop_execution(execution)

    async def RunFlow(self, request, context):
        if len(request.session_id) > 26:
            raise invalid_argument("session_id", "not a session id")
        flow, version, graph = await self._prepare_run(request.flow_id, request.version_id)
        inputs = run_inputs(graph.start_params(), struct_dict(request.inputs, request.HasField("inputs")))
        execution = await self.engine.create(self._new_run(flow, version, inputs, request.session_id), graph)
        async for entry in self._read(execution, 0, request.stop_on_disconnect):
            yield entry.message

    async def ListRuns(self, request, context):
        me = caller.current()
        limit = page_size(request.page_size)
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id)
        conditions = [FlowRunRow.flow_id == flow.id]
        if not me.is_admin:
            conditions.append(FlowRunRow.owner_id == me.user_id)
        if request.status:
            status = RUN_STATUS_NAMES.get(request.status)
            if status is None:
                raise invalid_argument("status", "unknown status")
            conditions.append(FlowRunRow.status == status)
        if request.version_id:
            conditions.append(FlowRunRow.version_id == request.version_id)
        if request.session_id:
            conditions.append(FlowRunRow.session_id == request.session_id)
        position = decode_token(request.page_token)
        page_conditions = list(conditions)
        if position is not None:
            page_conditions.append(FlowRunRow.id < str(position.get("id", "")))
        columns = [c for c in FlowRunRow.__table__.c if c.name not in ("graph", "state")]
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(*columns).where(*page_conditions).order_by(FlowRunRow.id.desc()).limit(limit + 1)
                )
            ).all()
            total = await session.scalar(select(func.count()).select_from(FlowRunRow).where(*conditions))
        more = len(rows) > limit
        rows = rows[:limit]
        runs = [run_message(FlowRunRow(**dict(r._mapping))) for r in rows]
        return flow_pb2.ListRunsResponse(
            runs=runs, next_page_token=encode_token(id=rows[-1].id) if more and rows else "", total_size=total or 0
        )

    async def _run_message(self, row: FlowRunRow) -> flow_pb2.Run:
        async with self.db.session() as session:
            nodes = list(await session.scalars(select(FlowRunNodeRow).where(FlowRunNodeRow.run_id == row.id)))
        far_future = utcnow().replace(year=9999)
        nodes.sort(key=lambda n: (n.start_time or n.end_time or far_future, n.id))
        message = run_message(row, nodes)
        execution = self.engine.local.get(row.id)
        if execution is not None:  # nodes executing right now (rows are written when they end)
            for node_id in list(execution.state.running):
                started = execution.node_started.get(node_id)
                node = execution.graph.nodes[node_id]
                running = flow_pb2.NodeRun(
                    node_id=node_id,
                    node_type=node.type,
                    node_name=node.name,
                    status=flow_pb2.NODE_RUN_STATUS_RUNNING,
                    attempt=started.attempt if started else 1,
                )
                if started is not None:
                    running.start_time.FromDatetime(started.at)
                message.nodes.append(running)
        return message

    async def GetRun(self, request, context):
        row = await self._run(request.run_id)
        return flow_pb2.GetRunResponse(run=await self._run_message(row))

    async def _resume(
        self, row: FlowRunRow, node_id: str, answer: dict[str, Any], history: list[dict[str, str]] | None = None
    ):
        if row.status != WAITING:
            raise not_waiting(row.id, f"the run is {row.status.replace('_', ' ')}, not waiting for input")
        state = RunState.from_dict(row.state)
        waiting = next((w for w in state.waiting if w.node_id == node_id), None)
        if waiting is None:
            pending = row.pending_input.get("node_id", "") if row.pending_input else ""
            raise not_waiting(row.id, f"the run is waiting for input on {pending!r}, not {node_id!r}")
        graph = Graph.from_dict(row.graph)
        spec = SPECS[graph.nodes[node_id].type]
        answer = spec.check_answer(waiting.request, answer)
        return await self.engine.resume(row, node_id, answer, history)

    async def ResumeRun(self, request, context):
        if not request.node_id:
            raise invalid_argument("node_id", "required")
        row = await self._run(request.run_id)
        execution = await self._resume(row, request.node_id, struct_dict(request.input, request.HasField("input")))
        async for entry in self._read(execution, execution.live.first_seq - 1, request.stop_on_disconnect):
            yield flow_pb2.ResumeRunResponse(seq=entry.seq, run_id=row.id, event=entry.message.event)

    async def StopRun(self, request, context):
        me = caller.current()
        row = await self._run(request.run_id)
        if row.status not in ENDED:
            for _ in range(3):
                stopped = await self.engine.request_stop(row)
                await self.engine.wait_ended(row.id, self.settings.flow_stop_wait_seconds)
                row = await self.engine.get_row(row.id)
                if row is None:
                    raise not_found("run", request.run_id)
                if row.status in ENDED or not stopped and row.status == RUNNING:
                    break
            await self.audit.record("flow.run.stop", actor_id=me.user_id, resource_type="run", resource_id=row.id)
        return flow_pb2.StopRunResponse(run=await self._run_message(row))

    async def StreamRunEvents(self, request, context):
        row = await self._run(request.run_id)
        if request.after_seq < 0:
            raise invalid_argument("after_seq", "must not be negative")
        async for entry in self.engine.follow(row, request.after_seq):
            yield flow_pb2.StreamRunEventsResponse.FromString(entry.payload)

    async def CompareFlow(self, request, context):
        version_ids = list(dict.fromkeys(request.version_ids))
        if not 2 <= len(version_ids) <= 5:
            raise invalid_argument("version_ids", "2 to 5 distinct versions")
        async with self.db.session() as session:
            flow = await self._flow(session, request.flow_id)
            if not self._can_edit(flow):
                raise permission_denied("only the flow's editors can compare its versions")
        prepared = [await self._prepare_run(flow.id, version_id) for version_id in version_ids]
        given = struct_dict(request.inputs, request.HasField("inputs"))
        runs = []
        for flow_row, version, graph in prepared:
            inputs = run_inputs(graph.start_params(), given)
            runs.append((version.id, self._new_run(flow_row, version, inputs, ""), graph))
        executions = [(version_id, await self.engine.create(row, graph)) for version_id, row, graph in runs]
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(version_id: str, execution) -> None:
            try:
                async for entry in execution.live.read(0):
                    if entry.message is not None:
                        queue.put_nowait((version_id, execution.run_id, entry))
            finally:
                queue.put_nowait(None)

        pumps = [asyncio.create_task(pump(v, e)) for v, e in executions]
        seq = 0
        open_streams = len(pumps)
        finished = False
        try:
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                    continue
                version_id, run_id, entry = item
                seq += 1
                yield flow_pb2.CompareFlowResponse(
                    seq=seq, version_id=version_id, run_id=run_id, event=entry.message.event
                )
            finished = True
        finally:
            for task in pumps:
                task.cancel()
            if not finished:  # the client left: the comparison's runs have no other reader
                for _, execution in executions:
                    self.engine.stop_execution(execution)

    # -- chat ----------------------------------------------------------------------------------------------------
    async def run_for_chat(
        self,
        *,
        flow_id: str,
        session_id: str,
        question: str = "",
        version_id: str = "",
        input_node_id: str = "",
        input: dict[str, Any] | None = None,
        history: list[dict[str, str]] | None = None,
        stop_on_close: bool = True,
        attachments: list[dict[str, Any]] | None = None,
    ) -> AsyncGenerator[flow_pb2.RunFlowResponse, None]:
        """One chat turn of a flow session, under the caller's principal (the session owner).

        If the session has a run of this flow waiting for input, the turn answers it: `input` (form values) or
        {"text": question} for a message, on `input_node_id` when given (RUN_NOT_WAITING if it is not the node
        waiting). Otherwise it starts a run of `version_id` (default: the current version) with inputs
        {"question": question, **input}; the question also answers the first message-mode input node the run
        reaches, so a flow that waits for the user's message right after its start gets this one.

        Yields the run's events as RunFlowResponse (seq continues the run's log, run_id on each) until the run
        ends or pauses for input (the last event is then input_required). Token events are only the answer's
        text: output nodes and the LLM nodes they stream from (other LLM nodes' tokens are left out; their
        results still appear in node events). `history` ([{"role": "user"|"assistant", "content"}], oldest first)
        feeds LLM nodes with history_turns. `attachments` (the turn's files, as chat stores them) fill the start
        variables of type file a new run leaves empty, and `files` (start.with_files). Closing the iterator before the end stops the run when
        `stop_on_close` (a stopped chat turn stops its run)."""
        given = dict(input or {})
        async with self.db.session() as session:
            waiting = None
            if session_id:
                waiting = (
                    await session.scalars(
                        select(FlowRunRow)
                        .where(
                            FlowRunRow.session_id == session_id,
                            FlowRunRow.flow_id == flow_id,
                            FlowRunRow.status == WAITING,
                        )
                        .order_by(FlowRunRow.id.desc())
                        .limit(1)
                    )
                ).first()
        if waiting is not None and caller.can_see(waiting.owner_id):
            node_id = input_node_id or (waiting.pending_input or {}).get("node_id", "")
            answer = given if given else {"text": question}
            execution = await self._resume(waiting, node_id, answer, history)
            after = execution.live.first_seq - 1
        else:
            if input_node_id:
                raise not_waiting("", "no run of this session is waiting for input")
            flow, version, graph = await self._prepare_run(flow_id, version_id)
            start = graph.start_params()
            inputs = run_inputs(start, with_files(start, {"question": question, **given}, chat_files(attachments)))
            prefill = {"text": question} if question.strip() else None
            execution = await self.engine.create(
                self._new_run(flow, version, inputs, session_id), graph, prefill=prefill, history=history
            )
            after = 0
        answer_nodes = execution.graph.answer_nodes()
        async for entry in self._read(execution, after, stop_on_close):
            event = entry.message.event
            if event.HasField("token") and event.token.node_id not in answer_nodes:
                continue
            yield entry.message

    # -- Python API for the tools domain (flows as tools) ---------------------------------------------------------
    async def published_flows(self, limit: int) -> list[tuple[flow_pb2.Flow, list[dict[str, Any]]]]:
        """Online flows (everyone may run them), most recently updated first, each with its start variables."""
        caller.current()
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(FlowRow)
                    .where(FlowRow.status == ONLINE)
                    .order_by(FlowRow.update_time.desc(), FlowRow.id.desc())
                    .limit(limit)
                )
            )
            graphs_ = [await self._current_graph(session, row) for row in rows]
        return [(flow_message(row), start_variables(graph)) for row, graph in zip(rows, graphs_)]

    async def published_flow(self, flow_id: str) -> tuple[flow_pb2.Flow, list[dict[str, Any]]]:
        """One online flow with its start variables; NOT_FOUND when it is not visible, FLOW_NOT_PUBLISHED when it
        is a draft."""
        async with self.db.session() as session:
            row = await self._flow(session, flow_id)
            if row.status != ONLINE:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "FLOW_NOT_PUBLISHED",
                    f"flow {flow_id!r} is not published",
                    {"flow_id": flow_id},
                )
            graph = await self._current_graph(session, row)
        return flow_message(row), start_variables(graph)

    async def run_to_end(self, flow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run an online flow's current version with `inputs` until it ends; its outputs. A run that fails raises
        its error; one that pauses for human input is stopped (a tool call cannot answer it)."""
        await self.published_flow(flow_id)
        flow, version, graph = await self._prepare_run(flow_id, "")
        execution = await self.engine.create(
            self._new_run(flow, version, run_inputs(graph.start_params(), inputs), ""), graph
        )
        async for entry in self._read(execution, 0, True):
            event = entry.message.event
            if event.HasField("run_finished"):
                return struct_dict(event.run_finished.outputs)
            if event.HasField("run_failed"):
                code = next(
                    (c for c in grpc.StatusCode if c.value[0] == event.run_failed.code), grpc.StatusCode.UNKNOWN
                )
                raise TypecaseError(code, "NODE_FAILED", event.run_failed.message)
            if event.HasField("input_required"):
                self.engine.stop_execution(execution)
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "FAILED_PRECONDITION",
                    "the flow waits for human input, which a tool call cannot give",
                )
        raise TypecaseError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "the run left this server; retry")


def start_variables(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """The start node's declared variables of a stored graph."""
    for node in graph.get("nodes") or []:
        if isinstance(node, dict) and node.get("type") in ("start", "NODE_TYPE_START", flow_pb2.NODE_TYPE_START):
            return [v for v in ((node.get("params") or {}).get("variables") or []) if isinstance(v, dict)]
    return []


__all__ = ["FlowService"]
