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
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from prometheus_client import Counter, Histogram
from sqlalchemy import bindparam, null, select, update

from typecase.server.chat import context as ctx
from typecase.server.chat import titles
from typecase.server.chat.convert import FINISH_FROM_PROTO, message_message, status_dict, to_dict, usage
from typecase.server.chat.eventlog import Entry, EventLog, LiveLog, stream_key
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
from typecase.server.chat.store import Finish, Start, TurnStore
from typecase.server.infra import tracing
from typecase.server.infra.cache import listen_forever
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import chat_pb2, common_pb2, flow_pb2, knowledge_pb2, llm_pb2

log = logging.getLogger("typecase.chat")

STOP_CHANNEL = "chat:turn-stops"

TURNS = Counter("typecase_chat_turns_total", "Chat turns ended, by status.", ("status",))
TAKEOVERS = Counter("typecase_chat_turn_takeovers_total", "Turns continued after their replica stopped.")
TURN_FIRST_TOKEN = Histogram(
    "typecase_chat_turn_time_to_first_token_seconds",
    "From the question being accepted to the answer's first token.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def stop_key(turn_id: str) -> str:
    return f"chat:turn:{turn_id}:stop"


def preview(text: str, chars: int) -> str:
    return " ".join(text.split())[:chars]


def turn_not_found(turn_id: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.NOT_FOUND, "TURN_NOT_FOUND", f"turn {turn_id!r} not found", {"turn_id": turn_id}
    )


def _now_stamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _status(code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None):
    return TypecaseError(code, reason, message, metadata).to_status()


@dataclass(frozen=True)
class FlowTurn:
    """What a flow session's turn runs: the flow, the input answering a paused run, the history."""

    flow_id: str
    input_node_id: str = ""
    input: dict | None = None
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass(eq=False)
class Turn:
    """A turn running on this replica."""

    id: str
    session_id: str
    owner_id: str
    question_id: str
    answer_id: str
    model_id: str
    question: str
    request: llm_pb2.GenerateRequest
    budget: chat_pb2.ContextBudget
    needs_title: bool = False
    kb_ids: list[str] = field(default_factory=list)
    flow: FlowTurn | None = None
    answer_row: ChatMessageRow | None = None  # as inserted; updated locally when the turn ends
    started_emitted: bool = False
    run_id: str = ""
    flow_version_id: str = ""
    input_required: flow_pb2.InputRequired | None = None
    outbox: LiveLog = field(default_factory=LiveLog)  # emitted, not yet in the shared log
    live: LiveLog = field(default_factory=LiveLog)  # in the shared log: what this replica's readers see
    seq: int = 0
    parts: list[str] = field(default_factory=list)
    citations: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    usage: common_pb2.Usage | None = None
    finish_reason: int = common_pb2.FINISH_REASON_UNSPECIFIED
    served_model_id: str = ""
    task: asyncio.Task | None = None
    writer: asyncio.Task | None = None
    stop_requested: bool = False
    finishing: bool = False
    abandoned: bool = False  # reaped by another replica: end quietly, write nothing
    continuing: bool = False  # taken over from a dead replica: the prompt is complete, generate the rest
    agent: Any = None  # an assistant turn's agent_turn.AgentTurn: the answer is its loop's
    flushed_chars: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def content(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True)
class NewTurn:
    """Everything a turn needs, prepared (and validated) by the service before the turn starts."""

    session_id: str
    owner_id: str
    question: str
    attachments: list[dict]
    request_id: str | None
    model_id: str
    prompt: ctx.Prompt
    config: llm_pb2.GenerationConfig
    needs_title: bool
    kb_ids: list[str] = field(default_factory=list)
    newest_message_id: str | None = None  # new ids must sort after it
    flow: FlowTurn | None = None  # set for flow sessions (then model_id, prompt and config are unused)
    agent: Any = None  # set for assistant sessions: agent_turn.AgentTurn (not continued on takeover yet)


class TurnInProgress(Exception):
    def __init__(self, turn_id: str):
        self.turn_id = turn_id


class Turns:
    def __init__(self, db: Database, cache, llm, settings, knowledge=None, flow=None):
        self.db = db
        self.cache = cache
        self.llm = llm
        self.knowledge = knowledge
        self.flow = flow
        self.settings = settings
        self.log = EventLog(
            cache,
            ttl_seconds=settings.chat_event_log_ttl_seconds,
            running_ttl_seconds=settings.chat_turn_timeout_seconds + settings.chat_event_log_ttl_seconds,
        )
        self.replica = f"{socket.gethostname()}:{os.getpid()}"[:128]
        self.local: dict[str, Turn] = {}
        self.agent_resume = None  # async (row, turn, events) -> None, set by the service for assistant turns
        self._background: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self.stop_listener_ready = asyncio.Event()
        # SQLite allows one writer at a time and makes the others sleep-poll for the lock (holding pooled
        # connections meanwhile); queueing our writers here instead keeps turn starts fast under load.
        self._sqlite_writer = asyncio.Lock() if db.dialect == "sqlite" else None
        self.store = TurnStore(self.writing)

    @asynccontextmanager
    async def writing(self):
        """A unit of work that writes (see _sqlite_writer)."""
        if self._sqlite_writer is None:
            async with self.db.session() as session:
                yield session
            return
        async with self._sqlite_writer:
            async with self.db.session() as session:
                yield session

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store.start_writer()
        self._loops = [
            asyncio.create_task(self._listen_for_stops(), name="chat-stop-listener"),
            asyncio.create_task(self._heartbeat(), name="chat-heartbeat"),
        ]
        try:  # stops published from now on reach this replica
            await asyncio.wait_for(self.stop_listener_ready.wait(), 10)
        except TimeoutError:
            log.warning("chat: the stop listener is not subscribed yet; stops will be found by polling meanwhile")

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
        tasks = [turn.task for turn in remaining if turn.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        writers = [turn.writer for turn in remaining if turn.writer is not None and not turn.writer.done()]
        if writers:  # let the end events reach the shared log
            await asyncio.wait(writers, timeout=2)
        await self.store.close()
        leftovers = [t for t in self._background if not t.done()]
        for task in [*self._loops, *leftovers]:
            task.cancel()
        await asyncio.gather(*self._loops, *leftovers, return_exceptions=True)

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

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
        return (
            row.status == RUNNING
            and row.id not in self.local
            and (row.lease_expire_time is None or row.lease_expire_time < utcnow())
        )

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
            flow=new.flow,
            agent=new.agent,
            answer_row=ChatMessageRow(**answer_values),
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
        turn.writer = self._spawn(self._write_log(turn), f"chat-log-{turn_id}")
        turn.task = asyncio.create_task(self._run(turn), name=f"chat-turn-{turn_id}")
        return ChatTurnRow(**turn_values)

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
        event.time.GetCurrentTime()
        message = chat_pb2.ChatResponse(seq=turn.seq, turn_id=turn.id, event=event)
        turn.outbox.append(Entry(turn.seq, message.SerializeToString(), terminal, message))

    async def _write_log(self, turn: Turn) -> None:
        """Move the turn's events from its outbox to the shared event log, then to its live log, in order (a task
        of its own, so that stopping the generation never interrupts a write half-way). Readers here see an event
        only once it is logged: a reader that resumes elsewhere after this replica dies finds all it has seen."""
        async for entry in turn.outbox.read(0):
            for attempt in range(3):
                try:
                    await self.log.append(turn.id, entry)
                    break
                except Exception as exc:
                    if attempt == 2:  # readers here still get it; readers elsewhere will miss it
                        log.warning("chat: event %d of turn %s not logged: %s", entry.seq, turn.id, exc)
                    else:
                        await asyncio.sleep(0.05 * (attempt + 1))
            turn.live.append(entry)

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
        """Ground the answer on the session's knowledge bases (when the knowledge service runs here): a
        retrieval step, the citations, and the passages in the prompt as far as the budget allows. True when the
        prompt changed."""
        search = getattr(self.knowledge, "search", None)
        if search is None and hasattr(self.knowledge, "Search"):  # the servicer method works without a context
            knowledge = self.knowledge

            async def search(request):
                return await knowledge.Search(request, None)

        if not turn.kb_ids or search is None:
            return False
        node = flow_pb2.NodeRun(
            node_id="knowledge_retrieval",
            node_type=flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL,
            node_name="Knowledge retrieval",
            status=flow_pb2.NODE_RUN_STATUS_RUNNING,
            start_time=_now_stamp(),
            attempt=1,
        )
        self._emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))
        try:
            found = await search(
                knowledge_pb2.SearchRequest(kb_ids=turn.kb_ids, query=turn.question, top_k=self.settings.chat_kb_top_k)
            )
        except TypecaseError as exc:  # answer without grounding rather than not at all
            node.status, node.error = flow_pb2.NODE_RUN_STATUS_FAILED, exc.to_status()
        else:
            node.status = flow_pb2.NODE_RUN_STATUS_SUCCEEDED
            turn.citations = [
                common_pb2.Citation(
                    kb_id=h.kb_id,
                    file_id=h.file_id,
                    file_name=h.file_name,
                    chunk_id=h.chunk_id,
                    page=h.page,
                    text=h.text,
                    score=h.score,
                )
                for h in found.hits
            ]
            if turn.citations:
                self._emit(turn, chat_pb2.TurnEvent(citation=chat_pb2.CitationEvent(citations=turn.citations)))
            room = turn.budget.budget_tokens - turn.budget.used_tokens - ctx.MESSAGE_OVERHEAD_TOKENS
            passages = []
            for i, citation in enumerate(turn.citations, 1):
                text = f"[{i}] {citation.file_name}: {citation.text}"
                cost = ctx.estimate_tokens(text, self.settings.chat_chars_per_token) + 1
                if cost > room:
                    break
                passages.append(text)
                room -= cost
            if passages:
                content = "Answer using these passages where relevant, citing them as [n]:\n\n" + "\n\n".join(passages)
                turn.request.messages.insert(
                    len(turn.request.messages) - 1,
                    llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=content),
                )
                turn.budget.used_tokens += ctx.estimate_tokens(content, self.settings.chat_chars_per_token)
        node.end_time.GetCurrentTime()
        turn.steps.append(chat_pb2.NodeEvent(node=node))
        self._emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))
        return node.status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED and bool(turn.citations)

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
                    self._emit(
                        turn,
                        chat_pb2.TurnEvent(
                            token=common_pb2.TokenDelta(text=chunk.text, reasoning_text=chunk.reasoning_text)
                        ),
                    )
                if chunk.finish_reason:
                    turn.finish_reason = chunk.finish_reason
                if chunk.HasField("usage"):
                    turn.usage = chunk.usage
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()  # closes the upstream call at once, also when the turn is stopped

    async def _run_flow(self, turn: Turn) -> None:
        """Answer with the session's flow: its run's nodes become node events (and the answer's steps), the
        answer nodes' text becomes token events, a pause for input ends the turn with an INPUT_REQUEST message."""
        run_for_chat = getattr(self.flow, "run_for_chat", None)
        if run_for_chat is None:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "FLOW_NOT_PUBLISHED",
                "flow sessions need the flow service, which is not running on this server",
            )
        stream = run_for_chat(
            flow_id=turn.flow.flow_id,
            session_id=turn.session_id,
            question=turn.question,
            input_node_id=turn.flow.input_node_id,
            input=turn.flow.input,
            history=turn.flow.history,
            stop_on_close=True,
        )
        try:
            async for response in stream:
                if not turn.run_id:
                    turn.run_id = response.run_id
                    self._emit_started(turn)
                event = response.event
                kind = event.WhichOneof("kind")
                if kind == "run_started":
                    turn.flow_version_id = event.run_started.version_id
                elif kind in ("node_started", "node_finished"):
                    step = chat_pb2.NodeEvent(run_id=response.run_id, node=getattr(event, kind))
                    if kind == "node_finished":
                        turn.steps.append(step)
                    self._emit(turn, chat_pb2.TurnEvent(node=step))
                elif kind == "token":
                    if turn.first_token is None:
                        turn.first_token = time.perf_counter()
                        TURN_FIRST_TOKEN.observe(turn.first_token - turn.started)
                    turn.parts.append(event.token.text)
                    self._emit(turn, chat_pb2.TurnEvent(token=event.token))
                elif kind == "input_required":
                    turn.input_required = event.input_required
                    if not turn.parts and event.input_required.prompt:
                        turn.parts.append(event.input_required.prompt)
                    self._emit(turn, chat_pb2.TurnEvent(input_required=event.input_required))
                    turn.finish_reason = common_pb2.FINISH_REASON_STOP
                    return
                elif kind == "run_finished":
                    finished = event.run_finished
                    turn.usage = finished.usage
                    if not turn.parts:
                        text = _output_text(json_format.MessageToDict(finished.outputs))
                        if text:
                            turn.parts.append(text)
                            self._emit(turn, chat_pb2.TurnEvent(token=common_pb2.TokenDelta(text=text)))
                    if finished.status == flow_pb2.RUN_STATUS_STOPPED:  # stopped from the flow's side
                        raise asyncio.CancelledError
                    turn.finish_reason = common_pb2.FINISH_REASON_STOP
                    return
                elif kind == "run_failed":
                    status = event.run_failed
                    raise _StatusError(status)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()  # before the end: stops the run

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
            event = chat_pb2.TurnEvent(error=_status(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", str(exc)))
        if not turn.outbox.ended:
            self._emit(turn, event, terminal=True)

    # -- titles ----------------------------------------------------------------------------------------------
    async def _title(self, session_id: str, question: str, answer: str, model_id: str) -> None:
        limit = self.settings.chat_title_max_chars
        title = ""
        try:
            async with asyncio.timeout(self.settings.chat_title_timeout_seconds):
                title = await titles.generate_title(
                    self.llm, model_id, question, answer, limit, self.settings.chat_title_max_tokens
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("chat: title model failed for session %s (%s); using the question", session_id, exc)
        title = title or titles.fallback_title(question, limit)
        async with self.writing() as session:
            await session.execute(  # a title the user set meanwhile wins
                update(ChatSessionRow)
                .where(ChatSessionRow.id == session_id, ChatSessionRow.title == "")
                .values(title=title)
            )

    # -- reading ---------------------------------------------------------------------------------------------
    async def get_row(self, turn_id: str) -> ChatTurnRow | None:
        async with self.db.session() as session:
            return await session.get(ChatTurnRow, turn_id)

    async def follow(self, row: ChatTurnRow, after_seq: int) -> AsyncIterator[Entry]:
        """The turn's events after `after_seq`, then live ones until its end."""
        turn = self.local.get(row.id)
        if turn is not None and after_seq >= turn.live.first_seq - 1:  # a continued turn's live log starts late
            async for entry in turn.live.read(after_seq):
                yield entry
            return
        if row.status != RUNNING and not await self.cache.xrange(stream_key(row.id), count=1):
            for entry in await self._stored_replay(row, after_seq):
                yield entry
            return

        async def on_idle(last_seq: int) -> Entry | None:
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

        async for entry in self.log.read(row.id, after_seq, self.settings.chat_follow_poll_seconds, on_idle):
            yield entry

    async def _stored_answer(self, row: ChatTurnRow) -> ChatMessageRow | None:
        async with self.db.session() as session:
            return await session.get(ChatMessageRow, row.answer_message_id)

    async def _stored_terminal(self, row: ChatTurnRow) -> Entry:
        answer = await self._stored_answer(row)
        return _entry(row.id, row.last_seq, _terminal_event(row, answer), terminal=True)

    async def _stored_replay(self, row: ChatTurnRow, after_seq: int) -> list[Entry]:
        """A finished turn whose log expired: started, the whole answer as one delta, and the end, at seqs
        1, last_seq - 1 and last_seq. A reader that already has part of the text cannot be served exactly."""
        answer = await self._stored_answer(row)
        text = answer.content if answer is not None else ""
        last = max(row.last_seq, 3 if text else 2)
        started = chat_pb2.TurnEvent(
            started=chat_pb2.TurnStarted(
                turn_id=row.id,
                session_id=row.session_id,
                question_message_id=row.question_message_id,
                answer_message_id=row.answer_message_id,
                model_id=row.model_id,
                run_id=row.run_id,
            )
        )
        entries = [_entry(row.id, 1, started)]
        if text:
            entries.append(_entry(row.id, last - 1, chat_pb2.TurnEvent(token=common_pb2.TokenDelta(text=text))))
        entries.append(_entry(row.id, last, _terminal_event(row, answer), terminal=True))
        if text and 1 < after_seq < last - 1:
            raise TypecaseError(
                grpc.StatusCode.OUT_OF_RANGE,
                "STREAM_EXPIRED",
                "this turn's event log has expired: resume from seq 0 to get the whole answer",
                {"turn_id": row.id, "after_seq": str(after_seq)},
            )
        return [e for e in entries if e.seq > after_seq]

    # -- stopping --------------------------------------------------------------------------------------------
    async def request_stop(self, row: ChatTurnRow) -> bool:
        """Ask the replica running the turn to stop it. False when the turn is not running."""
        if row.status != RUNNING:
            return False
        turn = self.local.get(row.id)
        if turn is not None:
            return self._stop_local(turn)
        await self.cache.set(stop_key(row.id), "1", ttl=self.settings.chat_turn_timeout_seconds)
        await self.cache.publish(STOP_CHANNEL, row.id)
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
        deadline = time.monotonic() + timeout
        turn = self.local.get(turn_id)
        if turn is not None:
            try:
                await asyncio.wait_for(turn.ended.wait(), timeout)
                return True
            except TimeoutError:
                return False
        delay = 0.005
        while time.monotonic() < deadline:
            row = await self.get_row(turn_id)
            if row is None or row.status != RUNNING:
                return True
            if self._lease_lapsed(row):
                await self.reap(turn_id, STOPPED)
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return False

    async def _listen_for_stops(self) -> None:
        def stop(turn_id: str) -> None:
            turn = self.local.get(turn_id)
            if turn is not None:
                self._stop_local(turn)

        await listen_forever(self.cache, STOP_CHANNEL, stop, self.stop_listener_ready, "chat stop listener")

    # -- liveness --------------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self.settings.chat_turn_lease_seconds / 4
        next_sweep = 0.0
        while True:
            try:
                await self._renew()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.chat_reap_interval_seconds
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("chat: heartbeat failed", exc_info=True)
            await asyncio.sleep(interval)

    async def _renew(self) -> None:
        turns = [t for t in self.local.values() if not t.finishing]
        if not turns:
            return
        ids = [t.id for t in turns]
        lease = utcnow() + timedelta(seconds=self.settings.chat_turn_lease_seconds)
        async with self.writing() as session:
            renewed = await session.execute(
                update(ChatTurnRow)
                .where(ChatTurnRow.id.in_(ids), ChatTurnRow.status == RUNNING, ChatTurnRow.replica == self.replica)
                .values(lease_expire_time=lease)
            )
            if renewed.rowcount < len(ids):
                ended = set(
                    await session.scalars(
                        select(ChatTurnRow.id).where(
                            ChatTurnRow.id.in_(ids),
                            (ChatTurnRow.status != RUNNING) | (ChatTurnRow.replica != self.replica),
                        )
                    )
                )
                for turn in turns:
                    if turn.id in ended:
                        log.warning(
                            "chat: turn %s was ended or continued elsewhere while running here (this "
                            "replica missed its lease); abandoning it",
                            turn.id,
                        )
                        turn.abandoned = True
                        self._stop_local(turn)
            # The partial answers, so that ListMessages shows progress and a crash loses little (one statement).
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
        for turn in turns:  # stops published while the listener was reconnecting
            if not turn.finishing and await self.cache.get(stop_key(turn.id)):
                self._stop_local(turn)

    async def sweep(self) -> int:
        """Continue (or else fail) running turns whose replica stopped renewing their lease; returns how many."""
        async with self.db.session() as session:
            lapsed = list(
                await session.scalars(
                    select(ChatTurnRow.id)
                    .where(ChatTurnRow.status == RUNNING, ChatTurnRow.lease_expire_time < utcnow())
                    .limit(500)
                )
            )
        count = 0
        for turn_id in lapsed:
            if turn_id in self.local:
                continue
            if await self.take_over(turn_id) or await self.reap(turn_id, FAILED) is not None:
                count += 1
        if count:
            log.warning("chat: picked up %d turns left running by a replica that stopped", count)
        return count

    async def take_over(self, turn_id: str) -> bool:
        """Continue a model turn whose replica stopped renewing its lease: claim its row, then generate the rest of
        the answer after the text already logged. False when it cannot be continued here (see the module doc) or
        another replica claimed it first."""
        row = await self.get_row(turn_id)
        if (
            row is None
            or row.request is None
            or turn_id in self.local
            or row.takeovers >= self.settings.chat_max_takeovers
        ):
            return False
        try:
            logged = await self.log.entries(turn_id)
        except Exception:
            return False
        if not logged or any(e.terminal for e in logged):  # gone, or ended but not stored: reap it
            return False
        agent = bool(row.request.get("tools"))  # an assistant turn: agent_turn.resume continues its loop
        if agent and self.agent_resume is None:
            return False
        now = utcnow()
        async with self.writing() as session:
            claimed = await session.execute(
                update(ChatTurnRow)
                .where(
                    ChatTurnRow.id == turn_id,
                    ChatTurnRow.status == RUNNING,
                    ChatTurnRow.takeovers == row.takeovers,
                    ChatTurnRow.lease_expire_time < now,
                )
                .values(
                    replica=self.replica,
                    takeovers=row.takeovers + 1,
                    lease_expire_time=now + timedelta(seconds=self.settings.chat_turn_lease_seconds),
                )
            )
            if claimed.rowcount != 1:
                return False
        events = [chat_pb2.ChatResponse.FromString(e.payload).event for e in logged]
        text = "".join(e.token.text for e in events)
        last_seq = max(e.seq for e in logged)
        request = json_format.ParseDict(row.request, llm_pb2.GenerateRequest(), ignore_unknown_fields=True)
        if text and not agent:  # the model continues its own reply (assistant prefill) instead of starting anew
            request.messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_ASSISTANT, content=text))
        budget = json_format.ParseDict(row.context or {}, chat_pb2.ContextBudget(), ignore_unknown_fields=True)
        turn = Turn(
            id=row.id,
            session_id=row.session_id,
            owner_id=row.owner_id,
            question_id=row.question_message_id,
            answer_id=row.answer_message_id,
            model_id=row.model_id,
            question="",
            request=request,
            budget=budget,
            answer_row=await self._stored_answer(row),
            started_emitted=True,
            continuing=True,
            seq=last_seq,
            parts=[text] if text else [],
            outbox=LiveLog(last_seq + 1),
            live=LiveLog(last_seq + 1),
            citations=[c for e in events if e.HasField("citation") for c in e.citation.citations],
            steps=[e.node for e in events if e.HasField("node") and e.node.node.HasField("end_time")],
        )
        turn.flushed_chars = len(text)
        if agent:
            await self.agent_resume(row, turn, events)
        self.local[turn_id] = turn
        turn.writer = self._spawn(self._write_log(turn), f"chat-log-{turn_id}")
        turn.task = asyncio.create_task(self._run(turn), name=f"chat-turn-{turn_id}")
        log.warning(
            "chat: turn %s continued by replica %s after %d events (its replica stopped renewing it)",
            turn_id,
            self.replica,
            last_seq,
        )
        TAKEOVERS.inc()
        return True

    async def reap(self, turn_id: str, status: str) -> Entry | None:
        """End a turn whose runner is gone (lease lapsed), keeping its partial answer: STOPPED when a stop
        was asked for, else FAILED. Returns the terminal entry it logged, None if the turn was not running."""
        try:
            logged = await self.log.entries(turn_id)
        except Exception:
            logged = []
        last_seq = max((e.seq for e in logged), default=0)
        text = None
        if logged:
            text = "".join(chat_pb2.ChatResponse.FromString(e.payload).event.token.text for e in logged)
        now = utcnow()
        final = STOPPED if status == STOPPED else FAILED
        error = None
        if final == FAILED:
            error = TypecaseError(
                grpc.StatusCode.UNAVAILABLE,
                "UNAVAILABLE",
                "the server running this turn stopped before the answer was finished",
                {"turn_id": turn_id},
            )
        async with self.writing() as session:
            taken = await session.execute(
                update(ChatTurnRow)
                .where(
                    ChatTurnRow.id == turn_id,
                    ChatTurnRow.status == RUNNING,
                    ChatTurnRow.lease_expire_time.is_(None) | (ChatTurnRow.lease_expire_time < now),
                )
                .values(status=final, end_time=now, lease_expire_time=None, last_seq=last_seq + 1, request=null())
            )
            if taken.rowcount != 1:
                return None
            row = await session.get(ChatTurnRow, turn_id)
            answer = await session.get(ChatMessageRow, row.answer_message_id)
            if answer is not None:
                if text is not None:
                    answer.content = text
                answer.status = final
                answer.finish_reason = "cancelled" if final == STOPPED else "error"
                answer.error = status_dict(error.to_status()) if error is not None else None
                answer.update_time = now
                if not answer.completion_tokens:
                    answer.completion_tokens = ctx.estimate_tokens(answer.content, self.settings.chat_chars_per_token)
            await session.execute(
                update(ChatSessionRow)
                .where(ChatSessionRow.id == row.session_id, ChatSessionRow.active_turn_id == turn_id)
                .values(active_turn_id=None, update_time=now)
            )
            await session.flush()
            entry = _entry(turn_id, last_seq + 1, _terminal_event(row, answer), terminal=True)
        TURNS.labels(final).inc()
        log.warning("chat: turn %s ended as %s by replica %s (its runner is gone)", turn_id, final, self.replica)
        try:
            await self.log.append(turn_id, entry)
        except Exception as exc:
            log.warning("chat: could not log the end of reaped turn %s: %s", turn_id, exc)
        return entry

    async def _clear_active(self, session_id: str, turn_id: str) -> None:
        async with self.writing() as session:
            await session.execute(
                update(ChatSessionRow)
                .where(ChatSessionRow.id == session_id, ChatSessionRow.active_turn_id == turn_id)
                .values(active_turn_id=None)
            )


def _terminal_event(row: ChatTurnRow, answer: ChatMessageRow | None) -> chat_pb2.TurnEvent:
    message = message_message(answer) if answer is not None else None
    if row.status == FAILED or (answer is not None and answer.status == FAILED):
        if message is not None and message.HasField("error"):
            status = message.error
        else:
            status = _status(grpc.StatusCode.UNKNOWN, "INTERNAL", "the answer failed")
        return chat_pb2.TurnEvent(time=_now_stamp(), error=status)
    budget = chat_pb2.ContextBudget()
    if row.context:
        json_format.ParseDict(row.context, budget, ignore_unknown_fields=True)
    return chat_pb2.TurnEvent(
        time=_now_stamp(),
        ended=chat_pb2.TurnEnded(
            answer=message,
            usage=message.usage if message is not None else None,
            finish_reason=message.finish_reason if message is not None else common_pb2.FINISH_REASON_UNSPECIFIED,
            context=budget,
        ),
    )


def _entry(turn_id: str, seq: int, event: chat_pb2.TurnEvent, terminal: bool = False) -> Entry:
    message = chat_pb2.ChatResponse(seq=seq, turn_id=turn_id, event=event)
    return Entry(seq, message.SerializeToString(), terminal, message)


class _StatusError(TypecaseError):
    """A failure that arrived as a google.rpc.Status (a flow run's): passed on as it is."""

    def __init__(self, status):
        super().__init__(grpc.StatusCode.UNKNOWN, "INTERNAL", status.message)
        self.status = status

    def to_status(self):
        return self.status


def _output_text(outputs: dict) -> str:
    """The text of a flow's final outputs: the usual answer keys, else the only string value."""
    for key in ("answer", "output", "text", "result", "content"):
        if isinstance(outputs.get(key), str):
            return outputs[key]
    strings = [v for v in outputs.values() if isinstance(v, str)]
    return strings[0] if len(strings) == 1 else ""
