"""FlowService: flows and their versions (CRUD, publish), validation, and runs on the durable engine.

The servicer is assembled from mixins on core.py's FlowCore (access, validation, lifecycle): flows and versions
here, runs and the Python API for chat and tools in run_rpcs.py.

Python API for other domains (chat), no gRPC hop; both run under the caller's principal like the RPCs:
  get_flow(flow_id) -> Flow                       (NOT_FOUND unless visible to the caller)
  run_for_chat(flow_id=..., session_id=..., question=..., ...) -> async iterator of RunFlowResponse
See run_for_chat for how a chat turn maps onto runs.

Visibility: a flow is visible to its owner, admins, those it is shared with (infra/sharing.py: a draft shared at
any level is seen and run like a published flow) and (once online) everyone. Its editors (owner, admins, an EDIT
grant) change its draft and versions and see them whole; everyone else sees the current graph with its secret params
redacted (flow/redact.py). Only the owner or an admin deletes, publishes, unpublishes, re-shares, changes run_as,
switches the live version of an online flow, or edits a flow that runs as its owner (an editor would otherwise run
their own graph with the owner's rights). A run is visible to the user who started it and to admins.
"""

from __future__ import annotations

import logging
from datetime import datetime

import grpc
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from typecase.server.flow import graph as graphs
from typecase.server.flow.convert import (
    FLOW_STATUS_NAMES,
    flow_message,
    version_message,
)
from typecase.server.flow.core import MAX_DESCRIPTION, MAX_LOGO
from typecase.server.flow.errors import not_editable
from typecase.server.flow.graph import graph_dict
from typecase.server.flow.models import (
    DRAFT,
    ONLINE,
    RUNNING,
    WAITING,
    FlowRow,
    FlowRunNodeRow,
    FlowRunRow,
    FlowVersionRow,
)
from typecase.server.flow.node_types import node_type_infos
from typecase.server.flow.run_rpcs import RunRPCs
from typecase.server.infra import sharing
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.server.rpc.fields import LIKE_ESCAPE, like_pattern, mask_paths
from typecase.server.rpc.paging import decode_token, encode_token, page_size
from typecase.v1 import flow_pb2, flow_pb2_grpc

log = logging.getLogger("typecase.flow")

FLOW_FIELDS = {"name", "description", "logo", "graph", "run_as"}
VERSION_FIELDS = {"name", "description", "graph"}


class FlowService(RunRPCs, flow_pb2_grpc.FlowServiceServicer):
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
            if "run_as" in paths:
                self._require_owner(row)
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
            row = await self._flow(session, request.flow_id, own=True)
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
            row = await self._flow(session, request.flow_id, own=True)
            version = await self._version(session, row, request.version_id or row.current_version_id)
        await self._require_valid(version, row)
        now = utcnow()
        async with self.db.session() as session:
            row = await self._flow(session, request.flow_id, own=True)
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
            row = await self._flow(session, request.flow_id, own=True)
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
        if flow.status == ONLINE:  # changes what is live
            self._require_owner(flow)
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


__all__ = ["FlowService"]
