"""Flow sessions: a chat turn answered by the session's flow. The run's nodes become node events (and the
answer's steps), its answer nodes' text becomes token events, a pause for input ends the turn with an
INPUT_REQUEST message, the run's failure becomes the turn's. The flow engine continues its run itself after a
crash, which is why such turns are never taken over by chat (see turns.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from typecase.server.chat.turn_state import TURN_FIRST_TOKEN, Turn
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.ports import ChatFlows
from typecase.v1 import chat_pb2, common_pb2, flow_pb2

Emit = Callable[..., None]  # Turns._emit(turn, event, terminal=False)


async def run_flow(turn: Turn, flow: ChatFlows | None, emit: Emit, emit_started: Callable[[Turn], None]) -> None:
    """Answer with the session's flow: its run's nodes become node events (and the answer's steps), the
    answer nodes' text becomes token events, a pause for input ends the turn with an INPUT_REQUEST message."""
    if flow is None:
        raise TypecaseError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "FLOW_NOT_PUBLISHED",
            "flow sessions need the flow service, which is not running on this server",
        )
    stream = flow.run_for_chat(
        flow_id=turn.flow.flow_id,
        session_id=turn.session_id,
        question=turn.question,
        input_node_id=turn.flow.input_node_id,
        input=turn.flow.input,
        history=turn.flow.history,
        stop_on_close=True,
        **({"attachments": turn.flow.attachments} if turn.flow.attachments else {}),
    )
    try:
        async for response in stream:
            if not turn.run_id:
                turn.run_id = response.run_id
                emit_started(turn)
            event = response.event
            kind = event.WhichOneof("kind")
            if kind == "run_started":
                turn.flow_version_id = event.run_started.version_id
            elif kind in ("node_started", "node_finished"):
                step = chat_pb2.NodeEvent(run_id=response.run_id, node=getattr(event, kind))
                if kind == "node_finished":
                    turn.steps.append(step)
                emit(turn, chat_pb2.TurnEvent(node=step))
            elif kind == "token":
                if turn.first_token is None:
                    turn.first_token = time.perf_counter()
                    TURN_FIRST_TOKEN.observe(turn.first_token - turn.started)
                turn.parts.append(event.token.text)
                emit(turn, chat_pb2.TurnEvent(token=event.token))
            elif kind == "input_required":
                turn.input_required = event.input_required
                if not turn.parts and event.input_required.prompt:
                    turn.parts.append(event.input_required.prompt)
                emit(turn, chat_pb2.TurnEvent(input_required=event.input_required))
                turn.finish_reason = common_pb2.FINISH_REASON_STOP
                return
            elif kind == "run_finished":
                finished = event.run_finished
                turn.usage = finished.usage
                if not turn.parts:
                    text = _output_text(json_format.MessageToDict(finished.outputs))
                    if text:
                        turn.parts.append(text)
                        emit(turn, chat_pb2.TurnEvent(token=common_pb2.TokenDelta(text=text)))
                if finished.status == flow_pb2.RUN_STATUS_STOPPED:  # stopped from the flow's side
                    raise asyncio.CancelledError
                turn.finish_reason = common_pb2.FINISH_REASON_STOP
                return
            elif kind == "run_failed":
                status = event.run_failed
                raise _StatusError(status)
    finally:
        await stream.aclose()  # before the end: stops the run


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
