"""The engine of this replica: starts, resumes, stops and follows runs, and keeps them alive across replicas.

- Every run's row is its checkpoint (runner.py). A replica executing a run holds a lease on the row and renews it;
  a running run whose lease lapsed lost its replica (crash, kill) and is continued from its last checkpoint by
  whichever replica claims it first: at the periodic sweep, at start-up, or when a reader waits on it.
- A run waiting for input holds no lease: ResumeRun on any replica claims it (compare-and-set on the status).
- Stop: the replica running the run interrupts it; another replica asks through a stop key plus a bus message
  (and the running replica also polls the keys at each heartbeat, in case the message was missed).
- Events: the running replica appends to a LiveLog (its own readers follow it directly) and copies each entry
  to the shared event log in the cache (every other reader), kept for a TTL after the run ends or pauses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
from sqlalchemy import or_, select, update

from typecase.server.flow.convert import input_required, status_message, usage
from typecase.server.flow.engine.runner import RUNS, Execution, shared_entry
from typecase.server.flow.engine.state import RunState
from typecase.server.flow.errors import not_waiting
from typecase.server.flow.graph import Graph
from typecase.server.flow.models import ENDED, FAILED, RUNNING, STOPPED, WAITING, FlowRunNodeRow, FlowRunRow
from typecase.server.flow.nodes.base import Services
from typecase.server.infra.cache import listen_forever
from typecase.server.infra.eventlog import Entry, EventLog
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import flow_pb2

log = logging.getLogger("typecase.flow")

STOP_CHANNEL = "flow:run-stops"


def stream_key(run_id: str) -> str:
    return f"flow:run:{run_id}:events"


def stop_key(run_id: str) -> str:
    return f"flow:run:{run_id}:stop"


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
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:128]
        self.log = EventLog(
            cache,
            ttl_seconds=settings.flow_event_log_ttl_seconds,
            running_ttl_seconds=settings.flow_run_timeout_seconds + settings.flow_event_log_ttl_seconds,
            key=stream_key,
        )
        self.local: dict[str, Execution] = {}
        self._background: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self.stop_listener_ready = asyncio.Event()
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._listen_for_stops(), name="flow-stop-listener"),
            asyncio.create_task(self._heartbeat(), name="flow-heartbeat"),
        ]
        try:
            await asyncio.wait_for(self.stop_listener_ready.wait(), 10)
        except TimeoutError:
            log.warning("flow: the stop listener is not subscribed yet; stops will be found by polling meanwhile")
        self.started = True

    async def stop(self) -> None:
        """Checkpoint and release the runs executing here (another replica, or this one restarted, continues
        them), then end the background loops."""
        runs = list(self.local.values())
        for execution in runs:
            execution.interrupt("release")
        tasks = [e.task for e in runs if e.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        writers = [e.writer for e in runs if e.writer is not None and not e.writer.done()]
        if writers:
            await asyncio.wait(writers, timeout=2)
        leftovers = [t for t in self._background if not t.done()]
        for task in [*self._loops, *leftovers]:
            task.cancel()
        await asyncio.gather(*self._loops, *leftovers, return_exceptions=True)
        await self.services.aclose()
        self.started = False

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- executing -------------------------------------------------------------------------------------------
    def launch(self, execution: Execution, resume: tuple[str, dict[str, Any]] | None = None) -> Execution:
        self.local[execution.run_id] = execution
        execution.writer = self.spawn(self._write_log(execution), f"flow-log-{execution.run_id}")
        execution.task = asyncio.create_task(execution.run(resume), name=f"flow-run-{execution.run_id}")
        return execution

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
            if claimed.rowcount != 1:
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
            if claimed.rowcount != 1:
                return None
            row = await session.get(FlowRunRow, run_id)
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

    async def _write_log(self, execution: Execution) -> None:
        """Move the run's events from its outbox to the shared event log, then to its live log, in order."""
        key = stream_key(execution.run_id)
        first = True
        async for entry in execution.outbox.read(execution.outbox.first_seq - 1):
            if entry.message is None:  # CLOSED
                execution.live.append(entry)
                return
            shared = shared_entry(entry)
            pause = shared is not entry
            for attempt in range(3):
                try:
                    await self.log.append(execution.run_id, shared)
                    if first and entry.seq != 1:  # a continued log: make sure it expires
                        await self.cache.expire(key, self.log.running_ttl)
                    if pause:
                        await self.cache.expire(key, self.log.ttl)
                    first = False
                    break
                except Exception as exc:
                    if attempt == 2:  # readers here still get it; readers elsewhere will miss it
                        log.warning("flow: event %d of run %s not logged: %s", entry.seq, execution.run_id, exc)
                    else:
                        await asyncio.sleep(0.05 * (attempt + 1))
            execution.live.append(entry)

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
        await self.cache.set(stop_key(row.id), "1", ttl=self.settings.flow_run_timeout_seconds)
        await self.cache.publish(STOP_CHANNEL, row.id)
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
            if done.rowcount != 1:
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
        try:
            await self.log.append(run_id, entry)
        except Exception as exc:
            log.warning("flow: could not log event %d of run %s: %s", entry.seq, run_id, exc)

    async def wait_ended(self, run_id: str, timeout: float) -> bool:
        """Wait until the run no longer runs (continuing a dead replica's stop ourselves)."""
        execution = self.local.get(run_id)
        if execution is not None:
            try:
                await asyncio.wait_for(execution.ended.wait(), timeout)
                return True
            except TimeoutError:
                return False
        deadline = time.monotonic() + timeout
        delay = 0.005
        while time.monotonic() < deadline:
            row = await self.get_row(run_id)
            if row is None or row.status != RUNNING:
                return True
            if self.lapsed(row):
                await self.reap_stopped(run_id)
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return False

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
            if done.rowcount != 1:
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
        return (
            row.status == RUNNING
            and row.id not in self.local
            and (row.lease_expire_time is None or row.lease_expire_time < utcnow())
        )

    async def _listen_for_stops(self) -> None:
        def stop(run_id: str) -> None:
            execution = self.local.get(run_id)
            if execution is not None:
                execution.interrupt("stop")

        await listen_forever(self.cache, STOP_CHANNEL, stop, self.stop_listener_ready, "flow stop listener")

    # -- liveness --------------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self.settings.flow_lease_seconds / 3
        next_sweep = 0.0
        while True:
            try:
                await self._renew()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.flow_sweep_interval_seconds
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("flow: heartbeat failed", exc_info=True)
            await asyncio.sleep(min(interval, self.settings.flow_sweep_interval_seconds))

    async def _renew(self) -> None:
        runs = [e for e in self.local.values() if not e.finishing]
        if not runs:
            return
        ids = [e.run_id for e in runs]
        now = utcnow()
        async with self.db.session() as session:
            renewed = await session.execute(
                update(FlowRunRow)
                .where(FlowRunRow.id.in_(ids), FlowRunRow.replica == self.replica, FlowRunRow.status == RUNNING)
                .values(lease_expire_time=now + timedelta(seconds=self.settings.flow_lease_seconds))
            )
            if renewed.rowcount < len(ids):
                mine = set(
                    await session.scalars(
                        select(FlowRunRow.id).where(
                            FlowRunRow.id.in_(ids), FlowRunRow.replica == self.replica, FlowRunRow.status == RUNNING
                        )
                    )
                )
                for execution in runs:
                    if execution.run_id not in mine and not execution.finishing:
                        execution.interrupt("abandon")
        for execution in runs:  # stops published while the listener was reconnecting
            if not execution.finishing and await self.cache.get(stop_key(execution.run_id)):
                execution.interrupt("stop")

    async def sweep(self) -> int:
        """Continue the running runs whose replica stopped renewing their lease; returns how many."""
        async with self.db.session() as session:
            lapsed = list(
                await session.scalars(
                    select(FlowRunRow.id)
                    .where(
                        FlowRunRow.status == RUNNING,
                        or_(FlowRunRow.lease_expire_time.is_(None), FlowRunRow.lease_expire_time < utcnow()),
                    )
                    .limit(100)
                )
            )
        count = 0
        for run_id in lapsed:
            if run_id in self.local:
                continue
            if await self.cache.get(stop_key(run_id)):
                if await self.reap_stopped(run_id):
                    continue
            try:
                if await self.recover(run_id) is not None:
                    count += 1
            except Exception:
                log.exception("flow: could not continue run %s", run_id)
        return count

    # -- reading ---------------------------------------------------------------------------------------------
    async def get_row(self, run_id: str) -> FlowRunRow | None:
        async with self.db.session() as session:
            return await session.get(FlowRunRow, run_id)

    async def follow(self, row: FlowRunRow, after_seq: int) -> AsyncIterator[Entry]:
        """The run's events after `after_seq`, then live ones until it ends or waits for input."""
        execution = self.local.get(row.id)
        if execution is not None and after_seq >= execution.live.first_seq - 1:
            async for entry in execution.live.read(after_seq):
                if entry.message is None:
                    break  # the run left this replica: go on with the shared log
                after_seq = entry.seq
                yield entry
            else:
                return
            row = await self.get_row(row.id) or row
        if row.status != RUNNING and not await self.cache.xrange(stream_key(row.id), count=1):
            for entry in stored_replay(row, after_seq):
                yield entry
            return

        async def on_idle(last_seq: int) -> Entry | None:
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

        async for entry in self.log.read(row.id, after_seq, self.settings.flow_follow_poll_seconds, on_idle):
            yield entry
            if is_pause(entry):
                current = await self.get_row(row.id)
                if current is not None and current.status == WAITING and current.last_seq <= entry.seq:
                    return


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
