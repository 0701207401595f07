"""A document far larger than the model's context, attached in chat, goes to the session's scratch index (the local
MiniLM embeddings, BM25): the question asked with it and later questions get its relevant passages in the prompt,
cited by the file's name; deleting the message or the session removes the index; the limits are clear errors."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import func, select

from tests.chat.conftest import register_fake_model
from tests.chat.helpers import chat_all, new_session, reason
from typecase.server.chat.models import ChatScratchChunkRow
from typecase.v1 import chat_pb2, flow_pb2

FACT = "The secret launch code of project Heliotrope is AMBER-7731."
TOPICS = [
    "harbour cranes",
    "orchard irrigation",
    "library opening hours",
    "tram timetables",
    "bakery ovens",
    "museum lighting",
    "river ferries",
    "school canteens",
    "city parks",
    "bicycle lanes",
]


def long_document(paragraphs: int = 400, planted_at: int = 290) -> bytes:
    lines = [
        f"Paragraph {i}: the committee discussed {TOPICS[i % len(TOPICS)]} for district {i % 37} and agreed to "
        f"review the budget of {1000 + 7 * i} crowns again in week {i % 52}."
        for i in range(paragraphs)
    ]
    lines.insert(planted_at, FACT)
    return "\n\n".join(lines).encode()


def sent_prompt(upstream, question: str) -> str:
    """Every message of the model call that asked `question`, joined."""
    body = next(r for r in upstream.requests if question in str(r["messages"][-1]["content"]))
    return "\n".join(str(m["content"]) for m in body["messages"])


async def scratch_rows(chat_app, session_id: str) -> int:
    async with chat_app.resources.db.session() as session:
        return await session.scalar(
            select(func.count()).select_from(ChatScratchChunkRow).where(ChatScratchChunkRow.session_id == session_id)
        )


async def small_model_session(me, upstream):
    small = await register_fake_model(me.llm, upstream.base_url, name="small", context_length=1024, make_default=False)
    return await new_session(me, model_id=small.id)


async def test_a_document_larger_than_the_context_is_retrieved_per_question(chat_app, me, upstream):
    session = await small_model_session(me, upstream)
    document = long_document()
    assert len(document) > 15 * 1024 * 3  # fifteen times the model's whole context (3 chars a token)
    asked = "[tokens=3] What is the secret launch code of project Heliotrope?"
    events = await chat_all(
        me,
        session.id,
        asked,
        attachments=[chat_pb2.Attachment(name="minutes.txt", mime_type="text/plain", data=document)],
    )
    assert events[-1].event.WhichOneof("kind") == "ended"
    prompt = sent_prompt(upstream, "launch code of project Heliotrope")
    assert FACT in prompt and 'attached file "minutes.txt"' in prompt
    assert 'Attached file "minutes.txt": too long for the context, so it was indexed' in prompt
    assert len(prompt) < 1024 * 3  # the passages, not the document
    steps = [e.event.node.node for e in events if e.event.WhichOneof("kind") == "node"]
    assert steps[-1].node_id == "attachment_retrieval"
    assert steps[-1].node_type == flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL
    assert steps[-1].status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED
    citations = [c for e in events if e.event.WhichOneof("kind") == "citation" for c in e.event.citation.citations]
    assert any(FACT in c.text and c.file_name == "minutes.txt" for c in citations)
    assert list(events[-1].event.ended.answer.citations) == citations
    held = await scratch_rows(chat_app, session.id)
    assert held > 50
    # written before the turn, embedded in its retrieval step (the Chat call does not wait for the model)
    assert steps[-1].inputs["chunks"] == steps[-1].inputs["embedded_now"] == held

    later = "[tokens=3] Remind me, which code launches Heliotrope?"
    events = await chat_all(me, session.id, later)
    assert FACT in sent_prompt(upstream, "which code launches Heliotrope")
    step = [e.event.node.node for e in events if e.event.WhichOneof("kind") == "node"][-1]
    assert step.node_id == "attachment_retrieval" and step.inputs["embedded_now"] == 0

    await me.chat.DeleteSession(chat_pb2.DeleteSessionRequest(session_id=session.id), metadata=me.md)
    assert await scratch_rows(chat_app, session.id) == 0


@pytest.mark.app_settings(chat_scratch_embed_batch=16)
async def test_the_retrieval_step_streams_its_embedding_progress(chat_app, me, upstream):
    session = await small_model_session(me, upstream)
    events = await chat_all(
        me,
        session.id,
        "[tokens=3] What is the launch code?",
        attachments=[chat_pb2.Attachment(name="minutes.txt", mime_type="text/plain", data=long_document(200, 10))],
    )
    held = await scratch_rows(chat_app, session.id)
    steps = [e.event.node.node for e in events if e.event.WhichOneof("kind") == "node"]
    assert all(s.node_id == "attachment_retrieval" for s in steps)
    running = [s for s in steps if s.status == flow_pb2.NODE_RUN_STATUS_RUNNING]
    # the step as it starts, then once per batch of 16 chunks embedded, then its end
    assert len(running) == 1 + -(-held // 16) and held > 32
    shown = [s.outputs["progress"] for s in running[1:]]
    assert shown == [f"{min(n, held)}/{held} chunks embedded" for n in range(16, held + 16, 16)]
    assert steps[-1].status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED and len(steps) == len(running) + 1


async def test_deleting_the_question_removes_its_documents_chunks(chat_app, me, upstream):
    session = await small_model_session(me, upstream)
    await chat_all(
        me,
        session.id,
        "[tokens=3] Summarise",
        attachments=[chat_pb2.Attachment(name="minutes.txt", mime_type="text/plain", data=long_document(200, 10))],
    )
    assert await scratch_rows(chat_app, session.id) > 0
    listed = (await me.chat.ListMessages(chat_pb2.ListMessagesRequest(session_id=session.id), metadata=me.md)).messages
    question = next(m for m in listed if m.attachments)
    await me.chat.DeleteMessage(chat_pb2.DeleteMessageRequest(message_id=question.id), metadata=me.md)
    assert await scratch_rows(chat_app, session.id) == 0
    await chat_all(me, session.id, "[tokens=3] And Heliotrope?")  # no index left: no retrieval step
    assert "attached file" not in sent_prompt(upstream, "And Heliotrope?")


@pytest.mark.app_settings(chat_scratch_max_chunks=20)
async def test_the_scratch_limits_are_clear_errors(chat_app, me, upstream):
    session = await small_model_session(me, upstream)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat_all(
            me,
            session.id,
            "Read",
            attachments=[chat_pb2.Attachment(name="minutes.txt", mime_type="text/plain", data=long_document())],
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(refused.value) == "INVALID_ARGUMENT"
    assert "minutes.txt" in refused.value.details() and "chat_scratch_max_chunks" in refused.value.details()
    assert await scratch_rows(chat_app, session.id) == 0 and upstream.requests == []


@pytest.mark.app_settings(chat_scratch_max_chars=10_000)
async def test_a_document_over_the_indexed_size_is_refused(chat_app, me, upstream):
    session = await small_model_session(me, upstream)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat_all(
            me,
            session.id,
            "Read",
            attachments=[chat_pb2.Attachment(name="minutes.txt", mime_type="text/plain", data=long_document())],
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "minutes.txt" in refused.value.details() and "chat_scratch_max_chars" in refused.value.details()


async def test_a_copied_session_keeps_its_own_index(chat_app, me, upstream):
    session = await small_model_session(me, upstream)
    await chat_all(
        me,
        session.id,
        "[tokens=3] Summarise",
        attachments=[chat_pb2.Attachment(name="minutes.txt", mime_type="text/plain", data=long_document(200, 150))],
    )
    held = await scratch_rows(chat_app, session.id)
    copy = (await me.chat.CopySession(chat_pb2.CopySessionRequest(session_id=session.id), metadata=me.md)).session
    assert await scratch_rows(chat_app, copy.id) == held
    await me.chat.DeleteSession(chat_pb2.DeleteSessionRequest(session_id=session.id), metadata=me.md)
    await chat_all(me, copy.id, "[tokens=3] What is the launch code of Heliotrope?")
    assert FACT in sent_prompt(upstream, "What is the launch code of Heliotrope?")
