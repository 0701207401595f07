"""Events yielded by the SDK's streams, and the bookkeeping that lets a stream resume without duplicates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from typecase.client._config import RetryPolicy
from typecase.client.errors import DeadlineExceeded, TypecaseError, from_status
from typecase.v1 import chat_pb2, common_pb2, flow_pb2

# A stream that breaks with these codes is reconnected (from the last seq) when its turn or run id is known.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One event of a chat turn: `kind` is the TurnEvent oneof name ("started", "token", "citation", "node",
    "input_required", "ended"); `text` is the answer text a token event appends ("" for other kinds)."""

    seq: int
    turn_id: str
    event: chat_pb2.TurnEvent

    @property
    def kind(self) -> str:
        return self.event.WhichOneof("kind") or ""

    @property
    def text(self) -> str:
        return self.event.token.text if self.kind == "token" else ""

    @property
    def terminal(self) -> bool:
        return self.kind in ("ended", "error")


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of a flow run: `kind` is the RunEvent oneof name ("run_started", "node_started", "token",
    "node_finished", "input_required", "run_finished"); `text` is a token event's text."""

    seq: int
    run_id: str
    event: flow_pb2.RunEvent

    @property
    def kind(self) -> str:
        return self.event.WhichOneof("kind") or ""

    @property
    def text(self) -> str:
        return self.event.token.text if self.kind == "token" else ""

    @property
    def terminal(self) -> bool:
        """The run finished or failed, or paused waiting for input (the stream ends there)."""
        return self.kind in ("run_finished", "run_failed", "input_required")


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """Bytes of an upload handed to the transport so far. `total_bytes` is None when the size is unknown."""

    file_name: str
    sent_bytes: int
    total_bytes: int | None

    @property
    def fraction(self) -> float | None:
        if self.total_bytes is None:
            return None
        return 1.0 if self.total_bytes == 0 else min(1.0, self.sent_bytes / self.total_bytes)

    @property
    def percent(self) -> float | None:
        fraction = self.fraction
        return None if fraction is None else fraction * 100


class _Seq(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def terminal(self) -> bool: ...


@dataclass
class Cursor:
    """Where a resumable stream is: its turn/run id, the last seq delivered, and the reconnects in a row."""

    stream_id: str = ""
    last_seq: int = 0
    done: bool = False
    failures: int = 0
    deadline: float | None = None

    def accept(self, event: _Seq, stream_id: str) -> bool:
        """Record an event; False for a duplicate (already delivered before a reconnect)."""
        if event.seq <= self.last_seq:
            return False
        self.last_seq = event.seq
        self.stream_id = self.stream_id or stream_id
        self.failures = 0
        self.done = event.terminal
        return True

    def remaining(self) -> float | None:
        """Seconds left before the stream's overall deadline (None: no deadline)."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the stream's deadline passed")
        return left

    def reconnect_delay(self, code: grpc.StatusCode | None, policy: RetryPolicy, *, restartable: bool) -> float | None:
        """Seconds to wait before reconnecting after the stream broke with `code` (None for a stream that ended
        without its terminal event), or None when the failure must be raised."""
        if code is not None and code not in RECONNECT_CODES:
            return None
        if not self.stream_id and not restartable:
            return None
        if self.failures >= policy.stream_reconnects:
            return None
        self.failures += 1
        delay = policy.backoff(self.failures)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None
        return delay


def chat_event(message: chat_pb2.ChatResponse | chat_pb2.StreamTurnEventsResponse) -> ChatEvent:
    return ChatEvent(seq=message.seq, turn_id=message.turn_id, event=message.event)


def run_event(
    message: flow_pb2.RunFlowResponse | flow_pb2.ResumeRunResponse | flow_pb2.StreamRunEventsResponse,
) -> RunEvent:
    return RunEvent(seq=message.seq, run_id=message.run_id, event=message.event)


@dataclass
class TurnState:
    """What a chat stream has assembled so far."""

    started: chat_pb2.TurnStarted | None = None
    ended: chat_pb2.TurnEnded | None = None
    error: TypecaseError | None = None
    citations: list[common_pb2.Citation] = field(default_factory=list)
    _text: list[str] = field(default_factory=list)
    _reasoning: list[str] = field(default_factory=list)

    def apply(self, event: ChatEvent) -> None:
        kind = event.kind
        if kind == "started":
            self.started = event.event.started
        elif kind == "token":
            self._text.append(event.event.token.text)
            if event.event.token.reasoning_text:
                self._reasoning.append(event.event.token.reasoning_text)
        elif kind == "citation":
            self.citations.extend(event.event.citation.citations)
        elif kind == "ended":
            self.ended = event.event.ended
        elif kind == "error":
            self.error = from_status(event.event.error, default_message="the chat turn failed")

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def reasoning_text(self) -> str:
        return "".join(self._reasoning)


@dataclass
class RunState:
    """What a flow run stream has assembled so far."""

    started: flow_pb2.RunStarted | None = None
    finished: flow_pb2.RunFinished | None = None
    input_required: flow_pb2.InputRequired | None = None
    error: TypecaseError | None = None
    _text: list[str] = field(default_factory=list)

    def apply(self, event: RunEvent) -> None:
        kind = event.kind
        if kind == "run_started":
            self.started = event.event.run_started
        elif kind == "token":
            self._text.append(event.event.token.text)
        elif kind == "input_required":
            self.input_required = event.event.input_required
        elif kind == "run_finished":
            self.finished = event.event.run_finished
        elif kind == "run_failed":
            self.error = from_status(event.event.run_failed, default_message="the flow run failed")

    @property
    def text(self) -> str:
        return "".join(self._text)
