# GENERATED from _async/streams.py by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`.
"""Chat turns and flow runs as resumable event streams: each event once, in seq order, across reconnects."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import grpc

from typecase.client._io import sleep
from typecase.client.errors import TypecaseError, Unavailable, from_rpc_error, status_code
from typecase.client.events import ChatEvent, Cursor, RunEvent, RunState, TurnState, chat_event, run_event
from typecase.v1 import chat_pb2, common_pb2, flow_pb2

if TYPE_CHECKING:
    from typecase.client._sync.chat import Chat
    from typecase.client._sync.client import Client
    from typecase.client._sync.flows import Flows

E = TypeVar("E", ChatEvent, RunEvent)


class _EventStream(Generic[E]):
    """A resumable event stream: yields each event once, in seq order, reconnecting from the last seq seen when
    the connection drops (UNAVAILABLE) once the turn or run id is known."""

    def __init__(self, client: Client, first: Callable[[float | None], Any] | None, *, stream_id: str = "",
                 after_seq: int = 0, restartable: bool = False, timeout: float | None = None) -> None:
        self._client = client
        self._first = first
        self._restartable = restartable
        limit = timeout if timeout is not None else client.settings.stream_timeout
        self._cursor = Cursor(stream_id=stream_id, last_seq=after_seq,
                              deadline=time.monotonic() + limit if limit is not None else None)
        self._call: Any = None
        self._cancelled = False
        self._events: Generator[E, None] = self._run()

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _reopen(self, stream_id: str, after_seq: int, timeout: float | None) -> Any:
        raise NotImplementedError

    def _convert(self, message: Any) -> E:
        raise NotImplementedError

    def _apply(self, event: E) -> TypecaseError | None:
        """Record the event; return the error to raise when it is a terminal failure."""
        raise NotImplementedError

    # -- iteration -----------------------------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The seq of the last event delivered: resume from here with `resume(id, after_seq=last_seq)`."""
        return self._cursor.last_seq

    @property
    def done(self) -> bool:
        return self._cursor.done

    def _open(self) -> Any:
        timeout = self._cursor.remaining()
        if self._cursor.stream_id:
            return self._reopen(self._cursor.stream_id, self._cursor.last_seq, timeout)
        assert self._first is not None
        return self._first(timeout)

    def _run(self) -> Generator[E, None]:
        cursor = self._cursor
        while not cursor.done:
            code: grpc.StatusCode | None = None
            failure: TypecaseError | None = None
            try:
                self._call = self._open()
                for message in self._call:
                    event = self._convert(message)
                    if not cursor.accept(event, _stream_id(event)):
                        continue
                    terminal_error = self._apply(event)
                    if terminal_error is not None:
                        raise terminal_error
                    yield event
                if cursor.done:
                    return
            except grpc.RpcError as error:
                if self._cancelled:
                    return
                code, failure = status_code(error), from_rpc_error(error)
            delay = cursor.reconnect_delay(code, self._client.settings.reconnect, restartable=self._restartable)
            if delay is None:
                if failure is not None:
                    raise failure
                raise Unavailable("the stream ended before its last event")
            sleep(delay)

    def __iter__(self) -> Iterator[E]:
        return self

    def __next__(self) -> E:
        return next(self._events)

    def cancel(self) -> None:
        """Stop receiving (from any thread with Client): iteration ends. The turn or run itself goes on unless it
        was started with stop_on_disconnect."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def close(self) -> None:
        self.cancel()
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _stream_id(event: ChatEvent | RunEvent) -> str:
    return event.turn_id if isinstance(event, ChatEvent) else event.run_id


class ChatStream(_EventStream[ChatEvent]):
    """The events of a chat turn (`for event in stream`, `async for` with AsyncClient), with what they add up to:
    `text`, `citations`, `started`, `ended`. A turn that fails after it started raises its error (e.g.
    DeadlineExceeded with reason UPSTREAM_TIMEOUT) from the iteration; `text` keeps what was generated."""

    def __init__(self, chat: Chat, first: Callable[[float | None], Any] | None, **kwargs: Any) -> None:
        self._chat = chat
        self.state = TurnState()
        super().__init__(chat._client, first, **kwargs)

    def _reopen(self, stream_id: str, after_seq: int, timeout: float | None) -> Any:
        request = chat_pb2.StreamTurnEventsRequest(turn_id=stream_id, after_seq=after_seq)
        return self._chat.stub.StreamTurnEvents(request, timeout=timeout)

    def _convert(self, message: Any) -> ChatEvent:
        return chat_event(message)

    def _apply(self, event: ChatEvent) -> TypecaseError | None:
        self.state.apply(event)
        return self.state.error

    @property
    def turn_id(self) -> str:
        """The turn's id, known after the first event."""
        return self._cursor.stream_id

    @property
    def text(self) -> str:
        """The answer text received so far."""
        return self.state.text

    @property
    def reasoning_text(self) -> str:
        return self.state.reasoning_text

    @property
    def citations(self) -> list[common_pb2.Citation]:
        return self.state.citations

    @property
    def started(self) -> chat_pb2.TurnStarted | None:
        return self.state.started

    @property
    def ended(self) -> chat_pb2.TurnEnded | None:
        return self.state.ended

    def collect(self) -> chat_pb2.TurnEnded:
        """Read the rest of the turn and return its `ended` event (answer message, usage, finish reason)."""
        for _ in self:
            pass
        if self.state.ended is None:
            raise Unavailable("the turn stream ended without its last event")
        return self.state.ended

    def stop(self, *, timeout: float | None = None) -> bool:
        """Stop generating (StopTurn); the stream then ends with `ended` (finish_reason CANCELLED)."""
        if not self.turn_id:
            raise ValueError("the turn id is not known yet: read the first event before stopping")
        return self._chat.stop(self.turn_id, timeout=timeout)


class RunStream(_EventStream[RunEvent]):
    """The events of a flow run, with `text` (streamed output), `started`, `finished` and `input_required`
    (set when the run paused for input: answer it with `client.flows.submit_input`). A failed run raises."""

    def __init__(self, flows: Flows, first: Callable[[float | None], Any] | None, **kwargs: Any) -> None:
        self._flows = flows
        self.state = RunState()
        super().__init__(flows._client, first, **kwargs)

    def _reopen(self, stream_id: str, after_seq: int, timeout: float | None) -> Any:
        request = flow_pb2.StreamRunEventsRequest(run_id=stream_id, after_seq=after_seq)
        return self._flows.stub.StreamRunEvents(request, timeout=timeout)

    def _convert(self, message: Any) -> RunEvent:
        return run_event(message)

    def _apply(self, event: RunEvent) -> TypecaseError | None:
        self.state.apply(event)
        return self.state.error

    @property
    def run_id(self) -> str:
        return self._cursor.stream_id

    @property
    def text(self) -> str:
        return self.state.text

    @property
    def started(self) -> flow_pb2.RunStarted | None:
        return self.state.started

    @property
    def finished(self) -> flow_pb2.RunFinished | None:
        return self.state.finished

    @property
    def input_required(self) -> flow_pb2.InputRequired | None:
        return self.state.input_required

    def collect(self) -> RunState:
        """Read the rest of the run (until it finishes or waits for input) and return the assembled state."""
        for _ in self:
            pass
        return self.state
