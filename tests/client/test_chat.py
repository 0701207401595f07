"""Chat turns streamed with the SDK on the local model (SmolLM2): assembled text, resume after a dropped
connection, transparent reconnects, deadlines, and the asyncio client."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.client.conftest import FAST_RECONNECT
from tests.conftest import ADMIN_KEY
from typecase.client import AsyncClient, Cancelled, ChatEvent, Client, DeadlineExceeded
from typecase.v1 import chat_pb2

QUESTION = "Write a short story about a lighthouse keeper."


def stored_answer(client: Client, session_id: str) -> chat_pb2.Message:
    messages = list(client.chat.list_messages(session_id))
    assert [m.category for m in messages][-2:] == [chat_pb2.MESSAGE_CATEGORY_QUESTION, chat_pb2.MESSAGE_CATEGORY_ANSWER]
    return messages[-1]


def assert_in_order(events: list[ChatEvent]) -> None:
    """Seqs start at 1 and only increase. (They may skip: the server merges token events that piled up for a slow
    reader into one carrying the last seq, so the text stays exact; tests compare texts for that.)"""
    seqs = [e.seq for e in events]
    assert seqs[0] == 1 and all(a < b for a, b in zip(seqs, seqs[1:])), seqs


def test_stream_assembles_the_stored_answer(client):
    session = client.chat.create_session(title="sdk stream")
    stream = client.chat.stream(session.id, "What is the capital of France?", max_tokens=12, temperature=0)
    events = list(stream)

    assert events[0].kind == "started" and events[-1].kind == "ended"
    assert_in_order(events)
    assert stream.turn_id == events[0].turn_id == events[0].event.started.turn_id
    tokens = [e for e in events if e.kind == "token"]
    assert len(tokens) >= 2  # streamed piece by piece
    text = "".join(e.text for e in events)
    assert text.strip() and text == stream.text
    assert stream.ended is not None and stream.ended.answer.content == text
    assert stored_answer(client, session.id).content == text
    assert 0 < stream.ended.usage.completion_tokens <= 12


def test_resume_after_the_channel_closes_mid_stream_yields_exactly_the_rest(hosted, client):
    session = client.chat.create_session(title="sdk resume")
    first = Client(hosted.target, api_key=ADMIN_KEY)
    stream = first.chat.stream(session.id, QUESTION, max_tokens=40, temperature=0)
    before = list(itertools.islice(stream, 4))  # started + 3 tokens
    assert [e.kind for e in before] == ["started", "token", "token", "token"]
    first.close()  # the connection goes away mid-answer
    with pytest.raises(Cancelled):
        next(stream)

    with Client(hosted.target, api_key=ADMIN_KEY) as second:  # e.g. after a restart of this process
        resumed = second.chat.resume(stream.turn_id, after_seq=stream.last_seq)
        after = list(resumed)
    assert_in_order(before + after)
    assert after[-1].kind == "ended"
    text = "".join(e.text for e in before + after)
    assert text == stream.text + resumed.text
    assert text == after[-1].event.ended.answer.content == stored_answer(client, session.id).content

    replay = client.chat.resume(stream.turn_id)  # from the start: the whole logged turn again
    assert "".join(e.text for e in replay) == text and replay.last_seq == after[-1].seq


def test_stream_reconnects_by_itself_when_the_connection_drops(hosted, gate, client):
    gate.listen()
    session = client.chat.create_session(title="sdk reconnect")
    with Client(gate.target, api_key=ADMIN_KEY, options=FAST_RECONNECT) as flaky:
        stream = flaky.chat.stream(session.id, QUESTION, max_tokens=40, temperature=0)
        events = []
        for event in stream:
            events.append(event)
            if len(events) == 4:
                gate.cut()  # every connection through the gate is reset
    assert gate.connections >= 2  # it did reconnect
    assert_in_order(events)  # nothing repeated (nothing lost: the texts below)
    assert events[-1].kind == "ended"
    assert stream.text == events[-1].event.ended.answer.content == stored_answer(client, session.id).content


def test_stream_deadline_and_stop(client):
    session = client.chat.create_session(title="sdk deadline")
    stream = client.chat.stream(session.id, QUESTION, max_tokens=400, timeout=0.5)
    with pytest.raises(DeadlineExceeded):
        for _ in stream:
            pass
    assert stream.turn_id  # the turn goes on server-side: stop it
    assert client.chat.stop(stream.turn_id) is True
    ended = client.chat.resume(stream.turn_id, after_seq=stream.last_seq).collect()
    assert ended.answer.status == chat_pb2.MESSAGE_STATUS_STOPPED
    assert ended.answer.content.startswith(stream.text)


async def test_async_client_streams_and_resumes(hosted):
    async with AsyncClient(hosted.target, api_key=ADMIN_KEY) as client:
        session = await client.chat.create_session(title="sdk async")
        stream = client.chat.stream(session.id, QUESTION, max_tokens=24, temperature=0)
        before = []
        async for event in stream:
            before.append(event)
            if len(before) == 3:
                break
        await stream.aclose()

        resumed = client.chat.resume(stream.turn_id, after_seq=before[-1].seq)
        after = [event async for event in resumed]
        assert_in_order(before + after)
        assert after[-1].kind == "ended"
        text = "".join(e.text for e in before + after)
        messages = [m async for m in client.chat.list_messages(session.id)]
        assert text == messages[-1].content == after[-1].event.ended.answer.content

        answer = await client.chat.ask(session.id, "And in one word?", max_tokens=4)
        assert answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE and answer.content
        await asyncio.sleep(0)
