"""The run RPCs of FlowService (a mixin on core.py's FlowCore): run, list, get, resume, stop, stream, compare; and
the Python API other domains call: run_for_chat (chat turns), published_flows, published_flow and run_to_end
(flows as tools)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import grpc
from sqlalchemy import func, select

from typecase.server.flow.convert import (
    RUN_STATUS_NAMES,
    flow_message,
    run_message,
)
from typecase.server.flow.core import FlowCore, permission_denied
from typecase.server.flow.engine.state import RunState
from typecase.server.flow.errors import not_waiting
from typecase.server.flow.graph import Graph
from typecase.server.flow.models import (
    ENDED,
    ONLINE,
    RUNNING,
    WAITING,
    FlowRow,
    FlowRunNodeRow,
    FlowRunRow,
    FlowVersionRow,
)
from typecase.server.flow.nodes import SPECS
from typecase.server.flow.nodes.start import chat_files, run_inputs, with_files
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import struct_dict
from typecase.server.rpc.paging import decode_token, encode_token, page_size
from typecase.v1 import flow_pb2


class RunRPCs(FlowCore):
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
                    node_type=cast(flow_pb2.NodeType, node.type),  # a stored NodeType number
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
                fresh = await self.engine.get_row(row.id)
                if fresh is None:
                    raise not_found("run", request.run_id)
                row = fresh
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
