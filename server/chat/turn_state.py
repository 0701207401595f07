"""What a chat turn is, apart from running it: the turns' dataclasses, their metrics, and a turn's events as log
entries, including its end and its replay as stored in the database (for readers of a turn whose log is gone or
whose runner died). Shared by turns.py (running), recovery.py (take-over and reap) and the generation steps.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from prometheus_client import Counter, Histogram

from typecase.server.chat import context as ctx
from typecase.server.chat.convert import message_message
from typecase.server.chat.eventlog import Entry, LiveLog
from typecase.server.chat.models import FAILED, ChatMessageRow, ChatTurnRow
from typecase.server.rpc.convert import set_now
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import chat_pb2, common_pb2, flow_pb2, llm_pb2

TURNS = Counter("typecase_chat_turns_total", "Chat turns ended, by status.", ("status",))
TAKEOVERS = Counter("typecase_chat_turn_takeovers_total", "Turns continued after their replica stopped.")
TURN_FIRST_TOKEN = Histogram(
    "typecase_chat_turn_time_to_first_token_seconds",
    "From the question being accepted to the answer's first token.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def preview(text: str, chars: int) -> str:
    return " ".join(text.split())[:chars]


def turn_not_found(turn_id: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.NOT_FOUND, "TURN_NOT_FOUND", f"turn {turn_id!r} not found", {"turn_id": turn_id}
    )


def now_stamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    set_now(stamp)
    return stamp


def error_status(code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None):
    return TypecaseError(code, reason, message, metadata).to_status()


@dataclass(frozen=True)
class FlowTurn:
    """What a flow session's turn runs: the flow, the input answering a paused run, the history."""

    flow_id: str
    input_node_id: str = ""
    input: dict | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    attachments: list[dict] = field(default_factory=list)  # the question's files, as stored: file start variables


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
    retrieval: dict | None = None
    scratch: bool = True  # the session may have scratch chunks (False: known to have none, no lookup in the turn)
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
    retrieval: dict | None = None  # the session's RetrievalSettings (chat/search_query.py)
    newest_message_id: str | None = None  # new ids must sort after it
    scratch: bool = True  # False: the session has no scratch chunks (scratch.py), its turn skips looking for them
    flow: FlowTurn | None = None  # set for flow sessions (then model_id, prompt and config are unused)
    agent: Any = None  # set for assistant sessions: agent_turn.AgentTurn


class TurnInProgress(Exception):
    def __init__(self, turn_id: str):
        self.turn_id = turn_id


def terminal_event(row: ChatTurnRow, answer: ChatMessageRow | None) -> chat_pb2.TurnEvent:
    message = message_message(answer) if answer is not None else None
    if row.status == FAILED or (answer is not None and answer.status == FAILED):
        if message is not None and message.HasField("error"):
            status = message.error
        else:
            status = error_status(grpc.StatusCode.UNKNOWN, "INTERNAL", "the answer failed")
        return chat_pb2.TurnEvent(time=now_stamp(), error=status)
    budget = chat_pb2.ContextBudget()
    if row.context:
        json_format.ParseDict(row.context, budget, ignore_unknown_fields=True)
    return chat_pb2.TurnEvent(
        time=now_stamp(),
        ended=chat_pb2.TurnEnded(
            answer=message,
            usage=message.usage if message is not None else None,
            finish_reason=message.finish_reason if message is not None else common_pb2.FINISH_REASON_UNSPECIFIED,
            context=budget,
        ),
    )


def turn_entry(turn_id: str, seq: int, event: chat_pb2.TurnEvent, terminal: bool = False) -> Entry:
    message = chat_pb2.ChatResponse(seq=seq, turn_id=turn_id, event=event)
    return Entry(seq, message.SerializeToString(), terminal, message)


def stored_replay(row: ChatTurnRow, answer: ChatMessageRow | None, after_seq: int) -> list[Entry]:
    """A finished turn whose log expired: started, the whole answer as one delta, and the end, at seqs
    1, last_seq - 1 and last_seq. A reader that already has part of the text cannot be served exactly."""
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
    entries = [turn_entry(row.id, 1, started)]
    if text:
        entries.append(turn_entry(row.id, last - 1, chat_pb2.TurnEvent(token=common_pb2.TokenDelta(text=text))))
    entries.append(turn_entry(row.id, last, terminal_event(row, answer), terminal=True))
    if text and 1 < after_seq < last - 1:
        raise TypecaseError(
            grpc.StatusCode.OUT_OF_RANGE,
            "STREAM_EXPIRED",
            "this turn's event log has expired: resume from seq 0 to get the whole answer",
            {"turn_id": row.id, "after_seq": str(after_seq)},
        )
    return [e for e in entries if e.seq > after_seq]
