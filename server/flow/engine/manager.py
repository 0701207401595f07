"""The engine of this replica: starts, resumes, stops and follows runs, and keeps them alive across replicas.

- Every run's row is its checkpoint (runner.py). A replica executing a run holds a lease on the row and renews it;
  a running run whose lease lapsed lost its replica (crash, kill) and is continued from its last checkpoint by
  whichever replica claims it first: at the periodic sweep, at start-up, or when a reader waits on it.
- A run waiting for input holds no lease: ResumeRun on any replica claims it (compare-and-set on the status).
- Stop: the replica running the run interrupts it; another replica asks through a stop key plus a bus message
  (and the running replica also polls the keys at each heartbeat, in case the message was missed).
- Events: the running replica appends to a LiveLog (its own readers follow it directly) and copies each entry
  to the shared event log in the cache (every other reader), kept for a TTL after the run ends or pauses.

The lease, stop, heartbeat/sweep, log writer and follow machinery is infra/leased_tasks.py (shared with chat
turns); this module supplies what is a run's own: how one is created, resumed, continued, reaped and replayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
from sqlalchemy import or_, update

from typecase.server.flow.convert import input_required, status_message, usage
from typecase.server.flow.engine.runner import RUNS, Execution, shared_entry
from typecase.server.flow.engine.state import RunState
from typecase.server.flow.errors import not_waiting
from typecase.server.flow.graph import Graph
from typecase.server.flow.models import ENDED, FAILED, RUNNING, STOPPED, WAITING, FlowRunNodeRow, FlowRunRow
from typecase.server.flow.nodes.base import Services
from typecase.server.infra.eventlog import Entry
from typecase.server.infra.leased_tasks import LeasedTasks, LeaseSettings
from typecase.server.infra.sql import Database, rows_matched, utcnow
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import flow_pb2

log = logging.getLogger("typecase.flow")

PREFIX = "flow:run"


def stream_key(run_id: str) -> str:
    return f"flow:run:{run_id}:events"


def run_entry(run_id: str, seq: int, event: flow_pb2.RunEvent, terminal: bool = False) -> Entry:
    if not event.HasField("time"):
        event.time.GetCurrentTime()
    message = flow_pb2.RunFlowResponse(seq=seq, run_id=run_id, event=event)
    return Entry(seq, message.SerializeToString(), terminal, message)


def uses_history(graph: Graph) -> bool:
    """Whether an LLM node of the graph reads the chat history (only then is it kept in the run's state)."""
    return any(n.type == flow_pb2.NODE_TYPE_LLM and (n.params.get("history_turns") or 0) for n in graph.nodes.values())


def is_pause(entry: Entry) -> bool:
    message = entry.message if entry.message is not None else flow_pb2.RunFlowResponse.FromString(entry.payload)
    return message.event.HasField("input_required")


class Engine:
    def __init__(self, db: Database, cache, settings, services: Services):
        self.db = db
        self.cache = cache
        self.settings = settings
        self.services = services
        self.leases: LeasedTasks[Execution] = LeasedTasks(
            db,
            cache,
            name="flow",
            prefix=PREFIX,
            model=FlowRunRow,
            settings=LeaseSettings(
                lease_seconds=(lease := settings.flow_lease_seconds),
                heartbeat_seconds=min(lease / 3, sweep := settings.flow_sweep_interval_seconds),
                sweep_seconds=sweep,
                sweep_batch=100,
                timeout_seconds=settings.flow_run_timeout_seconds,
                log_ttl_seconds=settings.flow_event_log_ttl_seconds,
                follow_poll_seconds=settings.flow_follow_poll_seconds,
            ),
            holder=self,
            to_shared=shared_entry,  # a pause ends live readers, not the shared log
        )
        self.replica = self.leases.replica
        self.log = self.leases.log
        self.local = self.leases.local
        self.stop_listener_ready = self.leases.stop_listener_ready
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.leases.start()
        self.started = True

    async def stop(self) -> None:
        """Checkpoint and release the runs executing here (another replica, or this one restarted, continues
        them), then end the background loops."""
        runs = list(self.local.values())
        for execution in runs:
            execution.interrupt("release")
        await self.leases.settle(runs)
        await self.leases.close()
        await self.services.aclose()
        self.started = False

    def spawn(self, coro, name: str) -> asyncio.Task:
        return self.leases.spawn(coro, name)

    # -- what the lease engine asks of runs (LeaseHolder) ----------------------------------------------------
    def stop_local(self, execution: Execution) -> bool:
        return execution.interrupt("stop")

    def abandon(self, execution: Execution) -> None:
        execution.interrupt("abandon")

    async def pick_up(self, run_id: str) -> bool:
        """A run whose lease lapsed: ended as STOPPED when a stop was asked for, else continued here."""
        if await self.leases.stop_asked(run_id) and await self.reap_stopped(run_id):
            return False
        return await self.recover(run_id) is not None

    # -- executing -------------------------------------------------------------------------------------------
    def launch(self, execution: Execution, resume: tuple[str, dict[str, Any]] | None = None) -> Execution:
        run_id = execution.run_id
        return self.leases.launch(run_id, execution, execution.run(resume), f"flow-run-{run_id}")

    async def create(
        self,
        row: FlowRunRow,
        graph: Graph,
        *,
        prefill: dict[str, Any] | None = None,
        history: list[dict[str, str]] | None = None,
    ) -> Execution:
        """Insert a new run (row fields set by the caller) and start executing it here."""
        state = RunState.initial(graph, prefill, history if uses_history(graph) else None)
        now = utcnow()
        row.status = RUNNING
        row.state = state.to_dict()
        row.replica = self.replica
        row.lease_expire_time = now + timedelta(seconds=self.settings.flow_lease_seconds)
        row.create_time = row.update_time = now
        row.last_seq = 1
        for name in ("prompt_tokens", "completion_tokens", "steps", "elapsed_ms"):
            setattr(row, name, 0)
        async with self.db.session() as session:
            session.add(row)
        execution = Execution(self, row, graph, state, 1)
        execution.emit(
            flow_pb2.RunEvent(
                run_started=flow_pb2.RunStarted(
                    run_id=row.id, flow_id=row.flow_id, version_id=row.version_id, session_id=row.session_id
                )
            )
        )
        return self.launch(execution)

    async def resume(
        self, row: FlowRunRow, node_id: str, answer: dict[str, Any], history: list[dict[str, str]] | None = None
    ) -> Execution:
        """Claim a run waiting on `node_id` and continue it here with the answer; RUN_NOT_WAITING otherwise."""
        now = utcnow()
        async with self.db.session() as session:
            claimed = await session.execute(
                update(FlowRunRow)
                .where(FlowRunRow.id == row.id, FlowRunRow.status == WAITING, FlowRunRow.last_seq == row.last_seq)
                .values(
                    status=RUNNING,
                    replica=self.replica,
                    pending_input=None,
                    update_time=now,
                    lease_expire_time=now + timedelta(seconds=self.settings.flow_lease_seconds),
                )
            )
            if rows_matched(claimed) != 1:
                raise not_waiting(row.id, "the run is no longer waiting for this input (answered or stopped)")
        first_seq = max(row.last_seq, await self._logged_seq(row.id)) + 1
        graph = Graph.from_dict(row.graph)
        state = RunState.from_dict(row.state)
        if history is not None and uses_history(graph):
            state.history = list(history)  # the conversation as it is now
        return self.launch(Execution(self, row, graph, state, first_seq), (node_id, answer))

    async def recover(self, run_id: str) -> Execution | None:
        """Continue a running run whose replica stopped renewing its lease; None if someone else has it."""
        if run_id in self.local:
            return self.local[run_id]
        now = utcnow()
        async with self.db.session() as session:
            claimed = await session.execute(
                update(FlowRunRow)
                .where(
                    FlowRunRow.id == run_id,
                    FlowRunRow.status == RUNNING,
                    or_(FlowRunRow.lease_expire_time.is_(None), FlowRunRow.lease_expire_time < now),
                )
                .values(
                    replica=self.replica,
                    update_time=now,
                    lease_expire_time=now + timedelta(seconds=self.settings.flow_lease_seconds),
                )
            )
            row = await session.get(FlowRunRow, run_id) if rows_matched(claimed) == 1 else None
            if row is None:
                return None
        logged, attempts = await self._log_facts(run_id)
        state = RunState.from_dict(row.state)
        for node_id in state.ready:  # started after the last checkpoint: running it again is another attempt
            if attempts.get(node_id, 0) > state.attempts.get(node_id, 0):
                state.attempts[node_id] = attempts[node_id]
        log.warning("flow: continuing run %s from its last checkpoint (its replica stopped)", run_id)
        execution = Execution(self, row, Graph.from_dict(row.graph), state, max(row.last_seq, logged) + 1)
        return self.launch(execution)

    async def _logged_seq(self, run_id: str) -> int:
        return (await self._log_facts(run_id))[0]

    async def _log_facts(self, run_id: str) -> tuple[int, dict[str, int]]:
        """The last seq in the run's shared log, and the latest attempt logged as started for each node."""
        try:
            entries = await self.log.entries(run_id)
        except Exception:
            return 0, {}
        attempts: dict[str, int] = {}
        for entry in entries:
            event = flow_pb2.RunFlowResponse.FromString(entry.payload).event
            if event.HasField("node_started"):
                started = event.node_started
                attempts[started.node_id] = max(attempts.get(started.node_id, 0), started.attempt)
        return max((e.seq for e in entries), default=0), attempts

    # -- stopping --------------------------------------------------------------------------------------------
    async def request_stop(self, row: FlowRunRow) -> bool:
        """Stop a running or waiting run. False when it had already ended."""
        if row.status in ENDED:
            return False
        execution = self.local.get(row.id)
        if execution is not None:
            return execution.interrupt("stop") or not execution.ended.is_set()
        if row.status == WAITING:
            return await self.end_waiting(row.id)
        await self.leases.stop_elsewhere(row.id)
        return True

    def stop_execution(self, execution: Execution) -> None:
        """Stop a run executing here, even one just pausing for input (then its paused state is stopped)."""
        if execution.interrupt("stop"):
            return

        async def after_pause() -> None:
            await execution.ended.wait()
            if execution.status == WAITING:
                await self.end_waiting(execution.run_id)

        self.spawn(after_pause(), f"flow-stop-{execution.run_id}")

    async def end_waiting(self, run_id: str) -> bool:
        """Stop a run paused for input (no replica executes it)."""
        now = utcnow()
        async with self.db.session() as session:
            row = await session.get(FlowRunRow, run_id)
            if row is None or row.status != WAITING:
                return False
            done = await session.execute(
                update(FlowRunRow)
                .where(FlowRunRow.id == run_id, FlowRunRow.status == WAITING)
                .values(status=STOPPED, end_time=now, update_time=now, pending_input=None, last_seq=row.last_seq + 1)
            )
            if rows_matched(done) != 1:
                return False
            await session.execute(
                update(FlowRunNodeRow)
                .where(FlowRunNodeRow.run_id == run_id, FlowRunNodeRow.status == WAITING)
                .values(status="stopped", end_time=now)
            )
        state = RunState.from_dict(row.state)
        event = flow_pb2.RunEvent(
            run_finished=flow_pb2.RunFinished(
                status=flow_pb2.RUN_STATUS_STOPPED, usage=usage(row.prompt_tokens, row.completion_tokens)
            )
        )
        event.run_finished.outputs.update(state.run_outputs)
        event.run_finished.elapsed.FromMilliseconds(row.elapsed_ms)
        await self._append_quietly(run_id, run_entry(run_id, row.last_seq + 1, event, terminal=True))
        RUNS.labels(STOPPED).inc()
        return True

    async def _append_quietly(self, run_id: str, entry: Entry) -> None:
        await self.leases.append_quietly(run_id, entry)

    async def wait_ended(self, run_id: str, timeout: float) -> bool:
        """Wait until the run no longer runs (continuing a dead replica's stop ourselves)."""
        return await self.leases.wait_ended(run_id, timeout, self.reap_stopped)

    async def reap_stopped(self, run_id: str) -> bool:
        """End as STOPPED a run asked to stop whose replica is gone."""
        now = utcnow()
        async with self.db.session() as session:
            row = await session.get(FlowRunRow, run_id)
            if row is None:
                return False
            done = await session.execute(
                update(FlowRunRow)
                .where(
                    FlowRunRow.id == run_id,
                    FlowRunRow.status == RUNNING,
                    or_(FlowRunRow.lease_expire_time.is_(None), FlowRunRow.lease_expire_time < now),
                )
                .values(status=STOPPED, end_time=now, update_time=now, lease_expire_time=None, replica="")
            )
            if rows_matched(done) != 1:
                return False
        seq = max(row.last_seq, await self._logged_seq(run_id)) + 1
        async with self.db.session() as session:
            await session.execute(update(FlowRunRow).where(FlowRunRow.id == run_id).values(last_seq=seq))
        event = flow_pb2.RunEvent(
            run_finished=flow_pb2.RunFinished(
                status=flow_pb2.RUN_STATUS_STOPPED, usage=usage(row.prompt_tokens, row.completion_tokens)
            )
        )
        await self._append_quietly(run_id, run_entry(run_id, seq, event, terminal=True))
        return True

    def lapsed(self, row: FlowRunRow) -> bool:
        return self.leases.lapsed(row)

    async def sweep(self) -> int:
        """Continue the running runs whose replica stopped renewing their lease; returns how many."""
        return await self.leases.sweep()

    # -- reading ---------------------------------------------------------------------------------------------
    async def get_row(self, run_id: str) -> FlowRunRow | None:
        return await self.leases.get_row(run_id)

    async def follow(self, row: FlowRunRow, after_seq: int) -> AsyncIterator[Entry]:
        """The run's events after `after_seq`, then live ones until it ends or waits for input."""
        async for entry in self.leases.follow(
            row, after_seq, on_idle=self._on_idle, stored_replay=self._stored_replay, stop_after=self._paused
        ):
            yield entry

    async def _stored_replay(self, row: FlowRunRow, after_seq: int) -> list[Entry]:
        return stored_replay(row, after_seq)

    async def _on_idle(self, row: FlowRunRow, last_seq: int) -> Entry | None:
        current = await self.get_row(row.id)
        if current is None:
            raise TypecaseError(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", f"run {row.id!r} not found", {"id": row.id})
        if current.status == RUNNING:
            if self.lapsed(current):
                self.spawn(self.recover(row.id), f"flow-recover-{row.id}")
            return None
        grace = timedelta(seconds=self.settings.flow_follow_poll_seconds)
        if last_seq < current.last_seq and utcnow() - current.update_time < grace:
            return None  # its last events may still be on their way to the log
        return stored_end(current, max(last_seq, current.last_seq))

    async def _paused(self, row: FlowRunRow, entry: Entry) -> bool:
        """A pause in the shared log ends the read once the row is waiting at it."""
        if not is_pause(entry):
            return False
        current = await self.get_row(row.id)
        return current is not None and current.status == WAITING and current.last_seq <= entry.seq


def stored_end(row: FlowRunRow, seq: int) -> Entry:
    """The run's present end (or pause) as an event, from its row."""
    if row.status == WAITING:
        return run_entry(row.id, seq, flow_pb2.RunEvent(input_required=input_required(row.pending_input)), True)
    if row.status == FAILED:
        status = (
            status_message(row.error)
            or TypecaseError(grpc.StatusCode.UNKNOWN, "INTERNAL", "the run failed").to_status()
        )
        return run_entry(row.id, seq, flow_pb2.RunEvent(run_failed=status), True)
    finished = flow_pb2.RunFinished(
        status=flow_pb2.RUN_STATUS_STOPPED if row.status == STOPPED else flow_pb2.RUN_STATUS_FINISHED,
        usage=usage(row.prompt_tokens, row.completion_tokens),
    )
    finished.outputs.update(row.outputs or {})
    finished.elapsed.FromMilliseconds(row.elapsed_ms)
    return run_entry(row.id, seq, flow_pb2.RunEvent(run_finished=finished), True)


def stored_replay(row: FlowRunRow, after_seq: int) -> list[Entry]:
    """A run whose event log expired: run_started and its present end or pause, at seqs 1 and last_seq. A reader
    that already has part of the log cannot be served exactly (STREAM_EXPIRED)."""
    last = max(row.last_seq, 2)
    if after_seq >= last:
        return []
    if 0 < after_seq < last - 1:
        raise TypecaseError(
            grpc.StatusCode.OUT_OF_RANGE,
            "STREAM_EXPIRED",
            "this run's event log has expired: resume from seq 0 for its outcome, or GetRun for its details",
            {"run_id": row.id, "after_seq": str(after_seq)},
        )
    entries = []
    if after_seq < 1:
        entries.append(
            run_entry(
                row.id,
                1,
                flow_pb2.RunEvent(
                    run_started=flow_pb2.RunStarted(
                        run_id=row.id, flow_id=row.flow_id, version_id=row.version_id, session_id=row.session_id
                    )
                ),
            )
        )
    entries.append(stored_end(row, last))
    return entries


__all__ = ["Engine", "stream_key"]
