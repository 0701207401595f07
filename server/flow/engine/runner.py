"""One run executing on this replica: node by node (independent branches concurrently), a checkpoint in SQL
after every step, its events written through the shared event log to the LiveLog this replica's readers follow.

How a run ends on this replica:
- finished / failed / stopped: the terminal state is written, then run_finished or run_failed ends the log;
- waiting for input: the state is written with status WAITING_INPUT and no lease, input_required pauses the log;
  ResumeRun (here or anywhere) continues it;
- released (this server shuts down): running nodes go back to ready and the lease is given up at once, so another
  replica (or this one after a restart) continues the run; no event is logged;
- abandoned: another replica took the run over (our lease lapsed); this one stops quietly.

Over 600 lines on purpose: it is one class, the run loop, its checkpoints and its ends share the execution's state
(seq, outbox, node tasks, waiting rows); split, that state would be passed around instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import grpc
from prometheus_client import Counter, Histogram
from sqlalchemy import insert, update

from typecase.server.flow import templates
from typecase.server.flow.convert import (
    NODE_STATUS,
    duration,
    input_required,
    json_safe,
    status_message,
    struct,
    to_dict,
    usage,
)
from typecase.server.flow.engine.state import RunState
from typecase.server.flow.errors import limit_exceeded
from typecase.server.flow.graph import Graph
from typecase.server.flow.models import (
    FAILED,
    FINISHED,
    RUN_AS_OWNER,
    RUNNING,
    STOPPED,
    WAITING,
    FlowRunNodeRow,
    FlowRunRow,
)
from typecase.server.flow.nodes.base import NodeContext, NodeResult
from typecase.server.flow.redact import redact_params
from typecase.server.infra.eventlog import Entry, LiveLog
from typecase.server.infra.leased_tasks import CLOSED
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import common_pb2, flow_pb2

if TYPE_CHECKING:
    from typecase.server.flow.engine.manager import Engine

log = logging.getLogger("typecase.flow")

RUNS = Counter("typecase_flow_runs_total", "Flow runs ended or paused, by status.", ("status",))
NODE_SECONDS = Histogram(
    "typecase_flow_node_seconds",
    "Time spent executing flow nodes, by node type.",
    ("type",),
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 120),
)
TYPE_NAMES = {value: name.removeprefix("NODE_TYPE_").lower() for name, value in flow_pb2.NodeType.items()}


class LeaseLost(Exception):
    """Another replica owns the run now."""


class NodeFailed(Exception):
    def __init__(self, node_id: str, error: TypecaseError):
        super().__init__(error.message)
        self.node_id = node_id
        self.error = error


@dataclass
class Started:
    at: datetime
    perf: float
    attempt: int


class Execution:
    def __init__(self, engine: Engine, row: FlowRunRow, graph: Graph, state: RunState, first_seq: int):
        self.engine = engine
        self.settings = engine.settings
        self.run_id = row.id
        self.flow_id = row.flow_id
        self.version_id = row.version_id
        self.owner = caller.Principal(row.owner_id, row.owner_role or caller.ROLE_USER)
        self.flow_owner = caller.Principal(row.flow_owner_id or row.owner_id, row.flow_owner_role or caller.ROLE_USER)
        self.runs_as_owner = row.run_as == RUN_AS_OWNER  # else knowledge is searched as the user running it
        self.session_id = row.session_id
        self.inputs = dict(row.inputs or {})
        self.graph = graph
        self.state = state
        self.seq = first_seq - 1
        # Events go to the outbox; the engine's writer appends each to the shared log, then to `live`, which this
        # replica's readers follow: whatever a reader saw is in the shared log (a crash loses no seen event).
        self.outbox = LiveLog(first_seq)
        self.live = LiveLog(first_seq)
        self.prompt_tokens = row.prompt_tokens
        self.completion_tokens = row.completion_tokens
        self.elapsed_before = row.elapsed_ms / 1000
        self.started = time.perf_counter()
        self.task: asyncio.Task | None = None
        self.writer: asyncio.Task | None = None
        self.node_tasks: dict[asyncio.Task, str] = {}
        self.node_started: dict[str, Started] = {}
        # (node_id, attempt) of the rows stored as WAITING_INPUT: finishing such a node updates its row.
        self.waiting_rows: set[tuple[str, int]] = {(w.node_id, w.attempt) for w in state.waiting}
        self.interrupted = ""
        self.abandoned = False
        self.finishing = False
        self.status = RUNNING
        self.ended = asyncio.Event()
        self.scope: dict[str, Any] = {
            **self.inputs,
            **state.outputs,
            "sys": {
                "run_id": row.id,
                "flow_id": row.flow_id,
                "version_id": row.version_id,
                "session_id": row.session_id,
                "user_id": row.owner_id,
                "inputs": self.inputs,
            },
        }

    # -- events --------------------------------------------------------------------------------------------------
    def emit(self, event: flow_pb2.RunEvent, *, terminal: bool = False, pause: bool = False) -> None:
        self.seq += 1
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        message = flow_pb2.RunFlowResponse(seq=self.seq, run_id=self.run_id, event=event)
        # In the live log a pause ends the readers of this execution; in the shared log it is not terminal.
        self.outbox.append(Entry(self.seq, message.SerializeToString(), terminal or pause, message))

    def _token(self, node_id: str, text: str) -> None:
        if text:
            self.emit(flow_pb2.RunEvent(token=common_pb2.TokenDelta(text=text, node_id=node_id)))

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.started)

    # -- running -------------------------------------------------------------------------------------------------
    def interrupt(self, reason: str) -> bool:
        """Ask the run to stop ("stop"), give itself up ("release"), fail on its time limit ("timeout") or end
        quietly ("abandon"). Node tasks are cancelled; the run's own task then writes the outcome, so a
        checkpoint is never cut half-way. False when the run is already ending."""
        if self.finishing or self.interrupted:
            return False
        self.interrupted = reason
        for task in self.node_tasks:
            task.cancel()
        return True

    async def run(self, resume: tuple[str, dict[str, Any]] | None = None) -> None:
        caller.bind(await self.engine.services.with_groups(self.owner))  # this task's own context (+ groups)
        remaining = self.settings.flow_run_timeout_seconds - self.elapsed_before
        timer = asyncio.get_running_loop().call_later(max(remaining, 0.001), self.interrupt, "timeout")
        try:
            try:
                if resume is not None:
                    await self._resume_node(*resume)
                await self._loop()
            except NodeFailed as failed:
                await self._abort_nodes()
                await self._end_failed(failed.error, failed.node_id)
            except TypecaseError as error:  # limits
                await self._abort_nodes()
                await self._end_failed(error)
        except LeaseLost:
            self.abandoned = True
            await self._abort_nodes()
        except asyncio.CancelledError:
            # Cancelled from outside (the event loop is going away): give the run up for another replica.
            await self._abort_nodes()
            try:
                await asyncio.shield(self._release())
            except Exception:
                pass
            raise
        except Exception as exc:
            log.exception("flow: run %s failed", self.run_id)
            await self._abort_nodes()
            try:
                await self._end_failed(TypecaseError(grpc.StatusCode.INTERNAL, "INTERNAL", f"the run failed: {exc}"))
            except Exception:
                log.exception("flow: could not record the failure of run %s", self.run_id)
        finally:
            timer.cancel()
            if not self.outbox.ended:
                self.outbox.append(CLOSED)
            if self.abandoned:
                log.warning("flow: run %s continues elsewhere; stopped executing it here", self.run_id)
            self.engine.local.pop(self.run_id, None)
            self.ended.set()

    async def _interrupted(self) -> None:
        reason = self.interrupted
        await self._abort_nodes()
        if reason == "stop":
            await self._end_stopped()
        elif reason == "release":
            await self._release()
        elif reason == "timeout":
            await self._end_failed(
                limit_exceeded(
                    self.run_id,
                    f"the run took longer than {self.settings.flow_run_timeout_seconds:g}s",
                    "time",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            )
        else:
            self.abandoned = True

    async def _loop(self) -> None:
        state = self.state
        limit = self.settings.flow_max_parallel_nodes
        while True:
            if self.interrupted:
                return await self._interrupted()
            while state.ready and len(self.node_tasks) < limit:
                if state.steps >= self.settings.flow_max_steps:
                    raise limit_exceeded(self.run_id, f"the run exceeded {self.settings.flow_max_steps} steps", "steps")
                self._launch(state.take_ready())
            if not self.node_tasks:
                break
            done, _ = await asyncio.wait(self.node_tasks, return_when=asyncio.FIRST_COMPLETED)
            finished: list[tuple[str, NodeResult]] = []
            failure: NodeFailed | None = None
            for task in sorted(done, key=lambda t: self.node_started[self.node_tasks[t]].perf):
                if task.cancelled():
                    continue  # interrupted: handled at the top of the loop
                node_id = self.node_tasks.pop(task)
                try:
                    finished.append((node_id, task.result()))
                except NodeFailed as exc:
                    failure = failure or exc
            if finished:
                await self._complete(finished)
            if failure is not None and not self.interrupted:
                raise failure
        if self.interrupted:
            return await self._interrupted()
        if state.waiting:
            await self._pause()
        else:
            await self._finish()

    def _context(self, node_id: str) -> NodeContext:
        node = self.graph.nodes[node_id]
        prefill = self.state.prefill if node.type == flow_pb2.NODE_TYPE_INPUT else None
        return NodeContext(
            node_id=node_id,
            node_type=node.type,
            name=node.name,
            params=node.params,
            scope=self.scope,
            services=self.engine.services,
            emit_token=lambda text: self._token(node_id, text),
            run_id=self.run_id,
            owner_id=self.owner.user_id,
            session_id=self.session_id,
            history=self.state.history,
            prefill=prefill,
            as_flow_owner=self._as_flow_owner if self.runs_as_owner else None,
        )

    async def _as_flow_owner(self, call):
        token = caller.bind(await self.engine.services.with_groups(self.flow_owner))
        try:
            return await call()
        finally:
            caller.bind_reset(token)

    def _launch(self, node_id: str) -> None:
        node = self.graph.nodes[node_id]
        attempt = self.state.attempts.get(node_id, 1)
        self.node_started[node_id] = Started(utcnow(), time.perf_counter(), attempt)
        self.emit(
            flow_pb2.RunEvent(
                node_started=flow_pb2.NodeRun(
                    node_id=node_id,
                    node_type=cast(flow_pb2.NodeType, node.type),
                    node_name=node.name,
                    status=flow_pb2.NODE_RUN_STATUS_RUNNING,
                    start_time=to_timestamp(self.node_started[node_id].at),
                    attempt=attempt,
                )
            )
        )
        task = asyncio.create_task(self._execute(node_id), name=f"flow-node-{self.run_id}-{node_id}")
        self.node_tasks[task] = node_id

    async def _execute(self, node_id: str, call=None) -> NodeResult:
        node = self.graph.nodes[node_id]
        timeout = self.settings.flow_node_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                if call is None:
                    return await node.runnable.run(self._context(node_id))
                return await call
        except TimeoutError:
            raise NodeFailed(
                node_id,
                TypecaseError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "NODE_FAILED",
                    f"node {node_id!r} took longer than {timeout:g}s",
                    {"node_id": node_id},
                ),
            ) from None
        except TypecaseError as error:
            if "node_id" not in error.metadata:
                error.metadata["node_id"] = node_id
            raise NodeFailed(node_id, error) from None
        except templates.TemplateFailed as exc:
            raise NodeFailed(
                node_id,
                TypecaseError(grpc.StatusCode.FAILED_PRECONDITION, "NODE_FAILED", str(exc), {"node_id": node_id}),
            ) from None
        except (asyncio.CancelledError, NodeFailed):
            raise
        except Exception as exc:
            log.exception("flow: node %s of run %s failed", node_id, self.run_id)
            raise NodeFailed(
                node_id,
                TypecaseError(
                    grpc.StatusCode.INTERNAL,
                    "NODE_FAILED",
                    f"node {node_id!r} failed: {type(exc).__name__}: {exc}",
                    {"node_id": node_id},
                ),
            ) from None
        finally:
            NODE_SECONDS.labels(TYPE_NAMES.get(node.type, "unknown")).observe(
                time.perf_counter() - self.node_started[node_id].perf
            )

    async def _resume_node(self, node_id: str, answer: dict[str, Any]) -> None:
        waiting = self.state.take_waiting(node_id)
        node = self.graph.nodes[node_id]
        self.node_started[node_id] = Started(utcnow(), time.perf_counter(), waiting.attempt)
        result = await self._execute(node_id, node.runnable.resume(self._context(node_id), answer, waiting.partial))
        await self._complete([(node_id, result)])

    def _node_row(
        self, node_id: str, status: str, result: NodeResult | None = None, error: TypecaseError | None = None
    ) -> dict[str, Any]:
        node = self.graph.nodes[node_id]
        started = self.node_started.get(node_id)
        ended = status not in ("running", "waiting_input")
        return {
            "run_id": self.run_id,
            "node_id": node_id,
            "node_type": node.type,
            "node_name": node.name,
            "status": status,
            "attempt": started.attempt if started else self.state.attempts.get(node_id, 1),
            "inputs": json_safe(redact_params(node.spec, result.inputs)) if result else {},
            "outputs": json_safe(result.outputs) if result else {},
            "error": to_dict(error.to_status()) if error else None,
            "prompt_tokens": result.prompt_tokens if result else 0,
            "completion_tokens": result.completion_tokens if result else 0,
            "start_time": started.at if started else None,
            "end_time": utcnow() if ended else None,
            "elapsed_ms": int((time.perf_counter() - started.perf) * 1000) if started and ended else 0,
        }

    @staticmethod
    def _node_event(row: dict[str, Any]) -> flow_pb2.NodeRun:
        message = flow_pb2.NodeRun(
            node_id=row["node_id"],
            node_type=row["node_type"],
            node_name=row["node_name"],
            status=NODE_STATUS[row["status"]],
            inputs=struct(row["inputs"]),
            outputs=struct(row["outputs"]),
            usage=usage(row["prompt_tokens"], row["completion_tokens"]),
            start_time=to_timestamp(row["start_time"]),
            end_time=to_timestamp(row["end_time"]),
            attempt=row["attempt"],
        )
        if row["end_time"] is not None:
            message.elapsed.CopyFrom(duration(row["elapsed_ms"] / 1000))
        if row["error"]:
            message.error.CopyFrom(status_message(row["error"]))
        return message

    async def _complete(self, finished: list[tuple[str, NodeResult]]) -> None:
        rows: list[dict[str, Any]] = []
        events: list[flow_pb2.RunEvent] = []
        for node_id, result in finished:
            node = self.graph.nodes[node_id]
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            if result.wait is not None:
                self.state.wait(node_id, result.wait, result.outputs)
                row = self._node_row(node_id, "waiting_input", result)
                self.waiting_rows.add((node_id, row["attempt"]))
                rows.append(row)
                continue
            if node.type == flow_pb2.NODE_TYPE_INPUT and self.state.prefill is not None:
                self.state.prefill = None  # the chat message answered this node
            self.state.complete(self.graph, node_id, result.outputs, result.handles)
            self.scope[node_id] = result.outputs
            if node.type == flow_pb2.NODE_TYPE_END:
                self.state.run_outputs.update(result.outputs)
            row = self._node_row(node_id, "succeeded", result)
            rows.append(row)
            events.append(flow_pb2.RunEvent(node_finished=self._node_event(row)))
        await self._checkpoint(rows, extra_events=len(events))
        for event in events:
            self.emit(event)

    async def _checkpoint(
        self, rows: list[dict[str, Any]], *, extra_events: int = 0, status: str = RUNNING, **values: Any
    ) -> None:
        """Write the run's state and the given node rows in one transaction, as long as we own the run."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.flow_lease_seconds)
        fields = {
            "state": self.state.to_dict(),
            "steps": self.state.steps,
            "last_seq": self.seq + extra_events,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "elapsed_ms": int(self.elapsed * 1000),
            "update_time": now,
            "status": status,
            "lease_expire_time": lease if status == RUNNING else None,
            "replica": self.engine.replica if status == RUNNING else "",
            **values,
        }
        # Core statements on one connection: a step's checkpoint is one short transaction.
        async with self.engine.db.engine.begin() as conn:
            owned = await conn.execute(
                update(FlowRunRow)
                .where(
                    FlowRunRow.id == self.run_id,
                    FlowRunRow.replica == self.engine.replica,
                    FlowRunRow.status == RUNNING,
                )
                .values(**fields)
            )
            if owned.rowcount != 1:
                raise LeaseLost(self.run_id)
            new_rows = []
            for row in rows:
                key = (row["node_id"], row["attempt"])
                if key in self.waiting_rows and row["status"] != "waiting_input":
                    self.waiting_rows.discard(key)
                    await conn.execute(
                        update(FlowRunNodeRow)
                        .where(
                            FlowRunNodeRow.run_id == self.run_id,
                            FlowRunNodeRow.node_id == row["node_id"],
                            FlowRunNodeRow.attempt == row["attempt"],
                        )
                        .values(
                            **{
                                k: v
                                for k, v in row.items()
                                if k not in ("run_id", "node_id", "attempt") and not (k == "start_time" and v is None)
                            }
                        )
                    )
                else:
                    new_rows.append({"id": new_id(), **row})
            if new_rows:
                await conn.execute(insert(FlowRunNodeRow), new_rows)

    async def _abort_nodes(self) -> None:
        """Cancel the nodes still running and wait (briefly) for them to clean up."""
        tasks = list(self.node_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.flow_stop_node_grace_seconds)
        self.node_tasks.clear()

    # -- ending ----------------------------------------------------------------------------------------------------
    def _unfinished_rows(self, status: str) -> list[dict[str, Any]]:
        """Rows for nodes interrupted while running, and for nodes left waiting, with `status`."""
        rows = [self._node_row(node_id, status) for node_id in self.state.running]
        for waiting in self.state.waiting:
            self.node_started.setdefault(waiting.node_id, Started(utcnow(), time.perf_counter(), waiting.attempt))
            rows.append(self._node_row(waiting.node_id, status, NodeResult(outputs=waiting.partial)))
        return rows

    def _skipped_rows(self) -> list[dict[str, Any]]:
        rows = []
        for node_id in self.graph.nodes:
            if (
                node_id not in self.state.ran
                and node_id not in self.state.running
                and not any(w.node_id == node_id for w in self.state.waiting)
            ):
                row = self._node_row(node_id, "skipped")
                row["attempt"] = 1
                rows.append(row)
        return rows

    async def _end(
        self, status: str, rows: list[dict[str, Any]], terminal: flow_pb2.RunEvent, error: TypecaseError | None = None
    ) -> None:
        self.finishing = True
        self.status = status
        events = [flow_pb2.RunEvent(node_finished=self._node_event(r)) for r in rows]
        now = utcnow()
        await self._checkpoint(
            rows,
            extra_events=len(events) + 1,
            status=status,
            end_time=now,
            pending_input=None,
            outputs=json_safe(self.state.run_outputs),
            error=to_dict(error.to_status()) if error else None,
        )
        for event in events:
            self.emit(event)
        self.emit(terminal, terminal=True)
        RUNS.labels(status).inc()

    async def _finish(self) -> None:
        outputs = json_safe(self.state.run_outputs)
        terminal = flow_pb2.RunEvent(
            run_finished=flow_pb2.RunFinished(
                status=flow_pb2.RUN_STATUS_FINISHED,
                outputs=struct(outputs),
                usage=usage(self.prompt_tokens, self.completion_tokens),
                elapsed=duration(self.elapsed),
            )
        )
        await self._end(FINISHED, self._skipped_rows(), terminal)

    async def _end_failed(self, error: TypecaseError, node_id: str = "") -> None:
        rows = []
        if node_id:
            if node_id in self.state.running:
                self.state.running.remove(node_id)
            rows.append(self._node_row(node_id, "failed", error=error))
        rows += self._unfinished_rows("stopped")
        self.state.running.clear()
        await self._end(FAILED, rows, flow_pb2.RunEvent(run_failed=error.to_status()), error)

    async def _end_stopped(self) -> None:
        rows = self._unfinished_rows("stopped")
        self.state.running.clear()
        terminal = flow_pb2.RunEvent(
            run_finished=flow_pb2.RunFinished(
                status=flow_pb2.RUN_STATUS_STOPPED,
                outputs=struct(json_safe(self.state.run_outputs)),
                usage=usage(self.prompt_tokens, self.completion_tokens),
                elapsed=duration(self.elapsed),
            )
        )
        await self._end(STOPPED, rows, terminal)

    async def _pause(self) -> None:
        self.finishing = True
        self.status = WAITING
        request = self.state.waiting[0].request
        await self._checkpoint([], extra_events=1, status=WAITING, pending_input=request)
        self.emit(flow_pb2.RunEvent(input_required=input_required(request)), pause=True)
        RUNS.labels(WAITING).inc()

    async def _release(self) -> None:
        """Give the run up without ending it: another replica (or this one, restarted) continues it."""
        self.finishing = True
        self.state.abort_running()
        now = utcnow()
        async with self.engine.db.session() as session:
            await session.execute(
                update(FlowRunRow)
                .where(
                    FlowRunRow.id == self.run_id,
                    FlowRunRow.replica == self.engine.replica,
                    FlowRunRow.status == RUNNING,
                )
                .values(
                    state=self.state.to_dict(),
                    last_seq=self.seq,
                    steps=self.state.steps,
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens,
                    elapsed_ms=int(self.elapsed * 1000),
                    update_time=now,
                    replica="",
                    lease_expire_time=now,
                )
            )
        log.info("flow: released run %s for another replica to continue", self.run_id)


def shared_entry(entry: Entry) -> Entry:
    """The entry as the shared log keeps it: a pause is not terminal there (the run goes on after a resume)."""
    if entry.terminal and entry.message is not None and entry.message.event.HasField("input_required"):
        return replace(entry, terminal=False)
    return entry
