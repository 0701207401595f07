"""Chat turns: the generation of an answer as a task of its own, decoupled from the connection that asked.

A turn's events go to its event log (eventlog.py); every caller, the one that asked included, is a reader of that
log, so a dropped connection loses nothing and stops nothing (unless the caller asked for that).

Across replicas:
- the turn row (chat_turns) is the truth about a turn's state; the session's `active_turn_id` (set and cleared by
  compare-and-set) allows one turn per session;
- stop: StopTurn writes a stop key and publishes the turn id on one bus channel every replica listens to; the
  replica running the turn cancels the generation (closing the upstream call), stores the partial answer as
  STOPPED and ends the log with `ended`. Replicas also poll the stop keys of their turns at each heartbeat, in
  case a publish was missed while their subscription reconnected;
- liveness: the running replica renews a lease on its turns' rows; a turn whose lease lapsed belongs to a dead
  replica. Whichever replica notices first (at its periodic sweep, or a reader waiting on the turn) continues a
  model turn: it claims the row and asks the model for the rest of the answer, sending the text already logged as
  the start of the assistant's reply, so readers get the whole answer in one log. Turns that cannot be continued
  (flow turns, whose run the flow engine continues itself; a log that is gone; too many takeovers) and turns
  lapsed when a new question or a stop arrives are failed or stopped, keeping their partial answer.
- events: a replica's readers see an event only once it is in the shared log, so a reader that resumes on
  another replica finds everything it has seen.

The lease, stop, heartbeat/sweep, log writer and follow machinery is infra/leased_tasks.py (shared with flow
runs); this module supplies what is a turn's own: its rows, its take-over and reap, and its stored replay. Over
600 lines on purpose: one class, Turns, whose methods share a turn's life cycle from begin to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
from sqlalchemy import bindparam, select, update

from typecase.server.chat import context as ctx
from typecase.server.chat import flow_turns, retrieval, titles
from typecase.server.chat.convert import FINISH_FROM_PROTO, message_message, status_dict, to_dict, usage
from typecase.server.chat.eventlog import Entry
from typecase.server.chat.ids import monotonic_id, monotonic_ids
from typecase.server.chat.models import (
    COMPLETE,
    FAILED,
    RUNNING,
    STOPPED,
    STREAMING,
    ChatMessageRow,
    ChatSessionRow,
    ChatTurnRow,
)
from typecase.server.chat.recovery import TurnRecovery
from typecase.server.chat.scratch import Scratch
from typecase.server.chat.store import Finish, Start, TurnStore
from typecase.server.chat.turn_state import (
    TURN_FIRST_TOKEN,
    TURNS,
    FlowTurn,
    NewTurn,
    Turn,
    TurnInProgress,
    error_status,
    preview,
    stored_replay,
    terminal_event,
    turn_entry,
    turn_not_found,
)
from typecase.server.infra import tracing
from typecase.server.infra.leased_tasks import LeasedTasks, LeaseSettings
from typecase.server.infra.sql import Database, transient, utcnow
from typecase.server.rpc.convert import set_now
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.ports import ChatFlows, Generation, KnowledgeSearch
from typecase.v1 import chat_pb2, common_pb2, llm_pb2

log = logging.getLogger("typecase.chat")

__all__ = ["FlowTurn", "NewTurn", "TurnInProgress", "Turns", "preview", "turn_not_found"]

PREFIX = "chat:turn"


class Turns(TurnRecovery):
    def __init__(
        self,
        db: Database,
        cache,
        llm: Generation | None,
        settings,
        knowledge: KnowledgeSearch | None = None,
        flow: ChatFlows | None = None,
    ):
        self.db = db
        self.cache = cache
        self.llm = llm
        self.knowledge = knowledge
        self.flow = flow
        self.settings = settings
        lease = settings.chat_turn_lease_seconds
        timings = LeaseSettings(
            lease, lease / 4, settings.chat_reap_interval_seconds, 500, settings.chat_turn_timeout_seconds,
            settings.chat_event_log_ttl_seconds, settings.chat_follow_poll_seconds,
        )  # fmt: skip
        replica = f"{socket.gethostname()}:{os.getpid()}"  # one per process (turns are per process)
        self.leases: LeasedTasks[Turn] = LeasedTasks(
            db, cache, name="chat", prefix=PREFIX, model=ChatTurnRow, settings=timings, holder=self, replica=replica,
            serialize_sqlite_writes=True, on_renew=self._store_progress,
        )  # fmt: skip
        self.log = self.leases.log
        self.replica = self.leases.replica
        self.local = self.leases.local
        self.agent_resume = None  # async (row, turn, events) -> None, set by the service for assistant turns
        self.scratch: Scratch | None = None  # set by the service: attached documents too large for the prompt
        self.stop_listener_ready = self.leases.stop_listener_ready
        self.writing = self.leases.writing
        self.store = TurnStore(self.writing)

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store.start_writer()
        await self.leases.start()

    async def stop(self) -> None:
        """Let running turns finish within the shutdown grace period, then stop the rest (answers kept as
        STOPPED), then end the background loops."""
        running = [t.task for t in self.local.values() if t.task is not None]
        if running:
            log.info("chat: waiting up to %gs for %d running turns", self.settings.shutdown_grace_seconds, len(running))
            await asyncio.wait(running, timeout=max(0.01, self.settings.shutdown_grace_seconds))
        remaining = list(self.local.values())
        for turn in remaining:
            self._stop_local(turn)
        await self.leases.settle(remaining)  # their end events reach the shared log
        await self.store.close()
        await self.leases.close()

    def _spawn(self, coro, name: str) -> asyncio.Task:
        return self.leases.spawn(coro, name)

    # -- what the lease engine asks of turns (LeaseHolder) ---------------------------------------------------
    def stop_local(self, turn: Turn) -> bool:
        return self._stop_local(turn)

    def abandon(self, turn: Turn) -> None:
        turn.abandoned = True
        self._stop_local(turn)

    async def pick_up(self, turn_id: str) -> bool:
        return await self.take_over(turn_id) or await self.reap(turn_id, FAILED) is not None

    async def _store_progress(self, session, turns: list[Turn]) -> None:
        """The partial answers, so that ListMessages shows progress and a crash loses little (one statement)."""
        grown = [(turn, turn.content) for turn in turns]
        grown = [(turn, content) for turn, content in grown if len(content) != turn.flushed_chars]
        if grown:
            M = ChatMessageRow.__table__.c
            await session.execute(
                update(ChatMessageRow.__table__)
                .where(M.id == bindparam("b_mid"), M.status == STREAMING)
                .values(content=bindparam("b_content")),
                [{"b_mid": turn.answer_id, "b_content": content} for turn, content in grown],
            )
            for turn, content in grown:
                turn.flushed_chars = len(content)

    # -- starting a turn -------------------------------------------------------------------------------------
    async def begin(self, new: NewTurn) -> tuple[ChatTurnRow, bool]:
        """Start a turn; returns (turn row, created). created is False when `request_id` matched a turn already
        running in the session (the caller re-attaches to it). Raises TurnInProgress for another running turn."""
        for _ in range(3):
            try:
                return await self._insert(new), True
            except TurnInProgress as busy:
                existing = await self.get_row(busy.turn_id)
                if existing is None or existing.status != RUNNING:
                    await self._clear_active(new.session_id, busy.turn_id)  # stale pointer
                    continue
                if new.request_id and existing.request_id == new.request_id:
                    return existing, False
                if self._lease_lapsed(existing):
                    await self.reap(existing.id, FAILED)
                    continue
                raise
        raise TurnInProgress("")

    def _lease_lapsed(self, row: ChatTurnRow) -> bool:
        return self.leases.lapsed(row)

    async def _insert(self, new: NewTurn) -> ChatTurnRow:
        turn_id = monotonic_id()
        question_id, answer_id = monotonic_ids(2, after=new.newest_message_id)
        now = utcnow()
        message = {  # every column, so the batch's executemany has one shape
            "session_id": new.session_id,
            "turn_id": turn_id,
            "citations": [],
            "steps": [],
            "input_required": None,
            "error": None,
            "finish_reason": "",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "rating": "",
            "feedback_comment": "",
            "copied_count": 0,
            "meta": {},
            "create_time": now,
            "update_time": now,
        }
        question = {
            **message,
            "id": question_id,
            "role": "user",
            "category": "question",
            "content": new.question,
            "attachments": new.attachments,
            "status": COMPLETE,
            "model_id": "",
        }
        answer_values = {
            **message,
            "id": answer_id,
            "role": "assistant",
            "category": "answer",
            "content": "",
            "attachments": [],
            "status": STREAMING,
            "model_id": new.model_id,
        }
        turn_values = {
            "id": turn_id,
            "session_id": new.session_id,
            "owner_id": new.owner_id,
            "request_id": new.request_id or None,
            "question_message_id": question_id,
            "answer_message_id": answer_id,
            "model_id": new.model_id,
            "status": RUNNING,
            "last_seq": 0,
            "context": to_dict(new.prompt.budget),
            "replica": self.replica,
            "lease_expire_time": now + timedelta(seconds=self.settings.chat_turn_lease_seconds),
            "create_time": now,
            "end_time": None,
            "run_id": "",
            "takeovers": 0,
            "request": None
            if new.flow is not None or new.agent is not None
            else to_dict(
                llm_pb2.GenerateRequest(
                    model_id=new.model_id, messages=new.prompt.messages, config=new.config, user=new.owner_id
                )
            ),
        }
        turn = Turn(
            id=turn_id,
            session_id=new.session_id,
            owner_id=new.owner_id,
            question_id=question_id,
            answer_id=answer_id,
            model_id=new.model_id,
            question=new.question,
            request=llm_pb2.GenerateRequest(
                model_id=new.model_id, messages=new.prompt.messages, config=new.config, user=new.owner_id
            ),
            budget=new.prompt.budget,
            needs_title=new.needs_title,
            kb_ids=new.kb_ids,
            retrieval=new.retrieval,
            scratch=new.scratch,
            flow=new.flow,
            agent=new.agent,
            answer_row=transient(ChatMessageRow, answer_values),
        )
        # Registered before commit: a stop for this turn, once the turn is visible to others, finds it here.
        self.local[turn_id] = turn
        try:
            claimed = await self.store.start(
                Start(
                    session_id=new.session_id,
                    turn_id=turn_id,
                    rows_messages=[question, answer_values],
                    row_turn=turn_values,
                    preview=preview(new.question, self.settings.chat_preview_chars),
                    now=now,
                )
            )
        except BaseException:
            self.local.pop(turn_id, None)
            raise
        if not claimed:
            self.local.pop(turn_id, None)
            async with self.db.session() as session:
                active = await session.scalar(
                    select(ChatSessionRow.active_turn_id).where(ChatSessionRow.id == new.session_id)
                )
            raise TurnInProgress(active or "")
        if new.flow is None:  # a flow turn is started once its run exists (TurnStarted carries the run id)
            self._emit_started(turn)
        self.leases.launch(turn_id, turn, self._run(turn), f"chat-turn-{turn_id}")
        return transient(ChatTurnRow, turn_values)

    # -- running a turn --------------------------------------------------------------------------------------
    def _emit_started(self, turn: Turn) -> None:
        if not turn.started_emitted:
            turn.started_emitted = True
            self._emit(
                turn,
                chat_pb2.TurnEvent(
                    started=chat_pb2.TurnStarted(
                        turn_id=turn.id,
                        session_id=turn.session_id,
                        question_message_id=turn.question_id,
                        answer_message_id=turn.answer_id,
                        model_id=turn.model_id,
                        run_id=turn.run_id,
                    )
                ),
            )

    def _emit(self, turn: Turn, event: chat_pb2.TurnEvent, terminal: bool = False) -> None:
        turn.seq += 1
        set_now(event.time)
        message = chat_pb2.ChatResponse(seq=turn.seq, turn_id=turn.id, event=event)
        turn.outbox.append(Entry(turn.seq, message.SerializeToString(), terminal, message))

    def _emit_token(self, turn: Turn, text: str, reasoning: str) -> None:
        """_emit of a token, its message built in place: a TurnEvent and a TokenDelta made apart are copied into
        it (~1.4 us a token)."""
        turn.seq += 1
        message = chat_pb2.ChatResponse(seq=turn.seq, turn_id=turn.id)
        event = message.event
        token = event.token
        token.text = text
        token.reasoning_text = reasoning
        set_now(event.time)
        turn.outbox.append(Entry(turn.seq, message.SerializeToString(), False, message))

    async def _run(self, turn: Turn) -> None:
        status, error = COMPLETE, None
        external_cancel = False
        try:
            if turn.stop_requested:
                raise asyncio.CancelledError
            async with asyncio.timeout(self.settings.chat_turn_timeout_seconds):
                with tracing.span(
                    "chat turn",
                    {
                        "typecase.turn_id": turn.id,
                        "typecase.session_id": turn.session_id,
                        "gen_ai.request.model": turn.model_id,
                    },
                ):
                    await self._generate(turn)
            turn.finishing = True
        except asyncio.CancelledError:
            turn.finishing = True
            status = STOPPED
            task = asyncio.current_task()
            if turn.stop_requested:
                while task.cancelling():
                    task.uncancel()
            else:
                external_cancel = True
        except TimeoutError:
            turn.finishing = True
            status, error = (
                FAILED,
                TypecaseError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "UPSTREAM_TIMEOUT",
                    f"the answer took longer than {self.settings.chat_turn_timeout_seconds:g}s and was cut off",
                ),
            )
        except TypecaseError as exc:
            turn.finishing = True
            status, error = FAILED, exc
        except Exception as exc:
            turn.finishing = True
            log.exception("chat: turn %s failed", turn.id)
            status, error = FAILED, TypecaseError(grpc.StatusCode.INTERNAL, "INTERNAL", f"the answer failed: {exc}")
        try:
            if not turn.abandoned:
                await self._finish(turn, status, error)
            if turn.abandoned:
                await self._end_abandoned(turn)
        finally:
            self.local.pop(turn.id, None)
            turn.ended.set()
            if external_cancel:
                raise asyncio.CancelledError

    async def _save_request(self, turn: Turn) -> None:
        """The prompt as generated from, for a replica that continues the turn if this one dies."""
        async with self.writing() as session:
            await session.execute(
                update(ChatTurnRow).where(ChatTurnRow.id == turn.id).values(request=to_dict(turn.request))
            )

    async def _retrieve(self, turn: Turn) -> bool:
        """Ground the answer on the session's knowledge bases (retrieval.py). True when the prompt changed."""
        changed = await retrieval.retrieve(turn, self.knowledge, self.llm, self._emit, self.settings)
        if self.scratch is not None and turn.scratch and await self.scratch.retrieve(turn, self._emit):
            changed = True
        return changed

    async def _generate(self, turn: Turn) -> None:
        if turn.flow is not None:
            await self._run_flow(turn)
            return
        if turn.agent is not None:
            await turn.agent.run(self, turn)
            return
        if self.llm is None:
            raise TypecaseError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "no LLM service is running on this server")
        if not turn.continuing and await self._retrieve(turn):
            await self._save_request(turn)
        stream = self.llm.generate(turn.request)
        try:
            async for chunk in stream:
                if chunk.served_model_id:
                    turn.served_model_id = chunk.served_model_id
                if chunk.text or chunk.reasoning_text:
                    if turn.first_token is None:
                        turn.first_token = time.perf_counter()
                        TURN_FIRST_TOKEN.observe(turn.first_token - turn.started)
                    turn.parts.append(chunk.text)
                    self._emit_token(turn, chunk.text, chunk.reasoning_text)
                if chunk.finish_reason:
                    turn.finish_reason = chunk.finish_reason
                if chunk.HasField("usage"):
                    turn.usage = chunk.usage
        finally:
            await stream.aclose()  # closes the upstream call at once, also when the turn is stopped

    async def _run_flow(self, turn: Turn) -> None:
        """Answer with the session's flow (flow_turns.py)."""
        await flow_turns.run_flow(turn, self.flow, self._emit, self._emit_started)

    async def _finish(self, turn: Turn, status: str, error: TypecaseError | None) -> None:
        self._emit_started(turn)  # a flow turn that failed or was stopped before its run started
        content = turn.content
        if status == STOPPED:
            finish = common_pb2.FINISH_REASON_CANCELLED
        elif status == FAILED:
            finish = common_pb2.FINISH_REASON_ERROR
        else:
            finish = turn.finish_reason or common_pb2.FINISH_REASON_STOP
        turn_usage = turn.usage
        if turn_usage is None:  # stopped or failed before the upstream reported usage: estimate
            completion = ctx.estimate_tokens(content, self.settings.chat_chars_per_token)
            turn_usage = usage(turn.budget.used_tokens, completion)
        end_seq = turn.seq + 1
        now = utcnow()
        title_model = ""
        if status == COMPLETE and turn.needs_title and self.llm is not None:
            try:
                title_model = await self.llm.default_model_id("title")
            except Exception:
                title_model = ""
        values = {
            "content": content,
            "status": status,
            "finish_reason": FINISH_FROM_PROTO.get(finish, ""),
            "prompt_tokens": turn_usage.prompt_tokens,
            "completion_tokens": turn_usage.completion_tokens,
            "model_id": turn.served_model_id or turn.model_id,
            "citations": [to_dict(c) for c in turn.citations],
            "steps": [to_dict(s) for s in turn.steps],
            "error": status_dict(error.to_status()) if error is not None else None,
            "category": "input_request" if turn.input_required is not None and status == COMPLETE else "answer",
            "input_required": to_dict(turn.input_required) if turn.input_required is not None else None,
            "update_time": now,
        }
        answer = None
        title = ""
        if status == COMPLETE and turn.needs_title and not title_model:
            # No title model: the question's start becomes the title, unless the user set one meanwhile.
            title = titles.fallback_title(turn.question, self.settings.chat_title_max_chars)
        try:
            ended = await self.store.finish(
                Finish(
                    turn_id=turn.id,
                    session_id=turn.session_id,
                    answer_id=turn.answer_id,
                    status=status,
                    end_seq=end_seq,
                    now=now,
                    answer=values,
                    preview=preview(content, self.settings.chat_preview_chars) if content else "",
                    title=title,
                    run_id=turn.run_id,
                    flow_version_id=turn.flow_version_id,
                )
            )
            if not ended:
                log.warning("chat: turn %s was ended elsewhere (lease lapsed?); dropping its result", turn.id)
                turn.abandoned = True
                return
            if turn.answer_row is not None:
                for name, value in values.items():
                    setattr(turn.answer_row, name, value)
                answer = message_message(turn.answer_row)
        except Exception as exc:  # the store is down: readers still get their end; the lease sweep fails the row
            log.exception("chat: could not store the result of turn %s", turn.id)
            error = TypecaseError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", f"the answer could not be stored: {exc}")
            status = FAILED
        TURNS.labels(status).inc()
        if status == FAILED:
            event = chat_pb2.TurnEvent(error=error.to_status())
        else:
            event = chat_pb2.TurnEvent(
                ended=chat_pb2.TurnEnded(answer=answer, usage=turn_usage, finish_reason=finish, context=turn.budget)
            )
        self._emit(turn, event, terminal=True)
        if title_model:
            self._spawn(
                self._title(turn.session_id, turn.question, content, title_model), f"chat-title-{turn.session_id}"
            )

    async def _end_abandoned(self, turn: Turn) -> None:
        """Another replica ended this turn (its lease lapsed): end the local readers with what it stored."""
        try:
            row = await self.get_row(turn.id)
            terminal = await self._stored_terminal(row)
            event = chat_pb2.ChatResponse.FromString(terminal.payload).event
        except Exception as exc:
            event = chat_pb2.TurnEvent(error=error_status(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", str(exc)))
        if not turn.outbox.ended:
            self._emit(turn, event, terminal=True)

    # -- titles ----------------------------------------------------------------------------------------------
    async def _title(self, session_id: str, question: str, answer: str, model_id: str) -> None:
        await titles.write_title(self.writing, self.llm, self.settings, session_id, question, answer, model_id)

    # -- reading ---------------------------------------------------------------------------------------------
    async def get_row(self, turn_id: str) -> ChatTurnRow | None:
        return await self.leases.get_row(turn_id)

    def follow(self, row: ChatTurnRow, after_seq: int) -> AsyncIterator[Entry]:
        """The turn's events after `after_seq`, then live ones until its end (the engine's generator itself: a
        generator of ours around it was one more step per token)."""
        return self.leases.follow(row, after_seq, on_idle=self._on_idle, stored_replay=self._stored_replay)

    async def _on_idle(self, row: ChatTurnRow, last_seq: int) -> Entry | None:
        current = await self.get_row(row.id)
        if current is None:
            raise turn_not_found(row.id)
        if current.status == RUNNING:
            if self._lease_lapsed(current) and not await self.take_over(row.id):
                return await self.reap(row.id, FAILED)
            return None
        grace = timedelta(seconds=self.settings.chat_follow_poll_seconds)
        if current.end_time is not None and utcnow() - current.end_time < grace:
            return None  # its last events may still be on their way to the log
        return await self._stored_terminal(current)

    async def _stored_answer(self, row: ChatTurnRow) -> ChatMessageRow | None:
        async with self.db.session() as session:
            return await session.get(ChatMessageRow, row.answer_message_id)

    async def _stored_terminal(self, row: ChatTurnRow) -> Entry:
        answer = await self._stored_answer(row)
        return turn_entry(row.id, row.last_seq, terminal_event(row, answer), terminal=True)

    async def _stored_replay(self, row: ChatTurnRow, after_seq: int) -> list[Entry]:
        return stored_replay(row, await self._stored_answer(row), after_seq)

    # -- stopping --------------------------------------------------------------------------------------------
    async def request_stop(self, row: ChatTurnRow) -> bool:
        """Ask the replica running the turn to stop it. False when the turn is not running."""
        if row.status != RUNNING:
            return False
        turn = self.local.get(row.id)
        if turn is not None:
            return self._stop_local(turn)
        await self.leases.stop_elsewhere(row.id)
        return True

    def _stop_local(self, turn: Turn) -> bool:
        if turn.finishing:
            return False
        turn.stop_requested = True
        if turn.task is not None:
            turn.task.cancel()
        return True

    async def wait_ended(self, turn_id: str, timeout: float) -> bool:
        """Wait until the turn is no longer running (stopping a dead replica's turn ourselves)."""

        async def reap_stopped(turn_id: str) -> None:
            await self.reap(turn_id, STOPPED)

        return await self.leases.wait_ended(turn_id, timeout, reap_stopped)

    # -- liveness --------------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Continue (or else fail) running turns whose replica stopped renewing their lease; returns how many."""
        return await self.leases.sweep()

    async def _clear_active(self, session_id: str, turn_id: str) -> None:
        async with self.writing() as session:
            await session.execute(
                update(ChatSessionRow)
                .where(ChatSessionRow.id == session_id, ChatSessionRow.active_turn_id == turn_id)
                .values(active_turn_id=None)
            )
