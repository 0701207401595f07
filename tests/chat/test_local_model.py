"""A real turn streamed by the built-in local model (SmolLM2), the platform's default chat model."""

from __future__ import annotations

from tests.chat.helpers import chat_all, kinds, messages, new_session, text_of
from typecase.v1 import chat_pb2, common_pb2


async def test_a_turn_streamed_by_the_local_model(admin):
    alice = admin
    session = await new_session(alice)  # no model given: the default chat model, the local SmolLM2
    assert session.model_id and session.app_name

    events = await chat_all(alice, session.id, "What is the capital of France?", max_tokens=12, temperature=0)
    assert kinds(events)[0] == "started" and kinds(events)[-1] == "ended"
    tokens = [e for e in events if e.event.WhichOneof("kind") == "token"]
    assert len(tokens) >= 2  # streamed piece by piece, not in one block
    ended = events[-1].event.ended
    assert ended.answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE
    assert ended.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    assert ended.answer.content == text_of(events) and ended.answer.content.strip()
    assert 0 < ended.usage.completion_tokens <= 12
    stored = await messages(alice, session.id)
    assert stored[-1].content == ended.answer.content
