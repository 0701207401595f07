"""Turns whose replica died: continued (take-over) or ended keeping their partial answer (reap).

A mixin of Turns (turns.py), kept apart because it is the part of a turn's life that runs on another replica than
the one that started it, and turns.py is long enough with the running part. The lease engine
(infra/leased_tasks.py) decides when a lease lapsed; this decides what becomes of the turn: see turns.py's module
docstring for the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from sqlalchemy import null, update

from typecase.server.chat import context as ctx
from typecase.server.chat.convert import status_dict
from typecase.server.chat.eventlog import Entry, EventLog, LiveLog
from typecase.server.chat.models import FAILED, RUNNING, STOPPED, ChatMessageRow, ChatSessionRow, ChatTurnRow
from typecase.server.chat.turn_state import TAKEOVERS, TURNS, Turn, terminal_event, turn_entry
from typecase.server.infra.leased_tasks import LeasedTasks
from typecase.server.infra.sql import utcnow
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import chat_pb2, common_pb2, llm_pb2

log = logging.getLogger("typecase.chat")


class TurnRecovery:
    """Take-over and reap, for Turns (which provides the attributes below)."""

    settings: Any
    replica: str
    local: dict[str, Turn]
    log: EventLog
    leases: LeasedTasks[Turn]
    writing: Callable[[], AbstractAsyncContextManager[Any]]
    get_row: Callable[[str], Awaitable[ChatTurnRow | None]]
    _stored_answer: Callable[[ChatTurnRow], Awaitable[ChatMessageRow | None]]
    _run: Callable[[Turn], Awaitable[None]]
    agent_resume: Callable[[ChatTurnRow, Turn, list], Awaitable[None]] | None

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
        self.leases.launch(turn_id, turn, self._run(turn), f"chat-turn-{turn_id}")
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
            entry = turn_entry(turn_id, last_seq + 1, terminal_event(row, answer), terminal=True)
        TURNS.labels(final).inc()
        log.warning("chat: turn %s ended as %s by replica %s (its runner is gone)", turn_id, final, self.replica)
        try:
            await self.log.append(turn_id, entry)
        except Exception as exc:
            log.warning("chat: could not log the end of reaped turn %s: %s", turn_id, exc)
        return entry
