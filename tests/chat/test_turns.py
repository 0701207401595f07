"""Chat turns over real gRPC against the real App and a fake upstream speaking OpenAI's streaming format:
streaming, resume from any point, stop, disconnects, one turn per session, context budget, in-band errors."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest

from tests.chat.conftest import register_fake_model
from tests.chat.fake_upstream import expected_answer
from tests.chat.helpers import as_chat, chat_all, error_info, get_session, kinds, messages, new_session, reason, text_of
from typecase.v1 import chat_pb2, common_pb2

ENDED = "ended"


async def resume(who, turn_id: str, after_seq: int) -> list[chat_pb2.StreamTurnEventsResponse]:
    return [
        m
        async for m in who.chat.StreamTurnEvents(
            chat_pb2.StreamTurnEventsRequest(turn_id=turn_id, after_seq=after_seq), metadata=who.md
        )
    ]


async def answer_of(who, session_id: str, turn_id: str) -> chat_pb2.Message:
    found = await messages(who, session_id, turn_id=turn_id)
    return next(m for m in found if m.category == chat_pb2.MESSAGE_CATEGORY_ANSWER)


async def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def test_turn_streams_logs_and_stores_the_answer(me, fake_model, upstream):
    session = await new_session(me, system_prompt="You are terse.")
    events = await chat_all(me, session.id, "[tokens=30] Tell me about greek letters")

    assert kinds(events)[0] == "started" and kinds(events)[-1] == ENDED
    assert set(kinds(events)[1:-1]) == {"token"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    turn_id = events[0].event.started.turn_id
    assert all(e.turn_id == turn_id for e in events)
    started, ended = events[0].event.started, events[-1].event.ended
    assert started.session_id == session.id and started.model_id == fake_model.id
    assert text_of(events) == expected_answer(30)

    answer = ended.answer
    assert answer.id == started.answer_message_id and answer.content == expected_answer(30)
    assert answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE and answer.finish_reason == common_pb2.FINISH_REASON_STOP
    assert ended.finish_reason == common_pb2.FINISH_REASON_STOP
    assert ended.usage.completion_tokens == 30 and answer.usage.completion_tokens == 30
    assert ended.context.budget_tokens > 0 and 0 < ended.context.used_tokens <= ended.context.budget_tokens
    assert ended.context.dropped_turns == 0

    stored = await messages(me, session.id)
    assert [(m.category, m.turn_id) for m in stored] == [
        (chat_pb2.MESSAGE_CATEGORY_QUESTION, turn_id),
        (chat_pb2.MESSAGE_CATEGORY_ANSWER, turn_id),
    ]
    assert stored[0].id == started.question_message_id and stored[0].content.endswith("greek letters")
    assert stored[1] == answer

    sent = next(r["messages"] for r in upstream.requests if r["messages"][-1]["content"].startswith("[tokens=30]"))
    assert sent[0] == {"role": "system", "content": "You are terse."} and sent[-1]["role"] == "user"

    # The whole log replays after the end, identically, from any seq.
    replay = await resume(me, turn_id, 0)
    assert as_chat(replay) == as_chat(events)
    assert [m.seq for m in await resume(me, turn_id, len(events) - 2)] == [len(events) - 1, len(events)]
    assert await resume(me, turn_id, len(events)) == []

    # A title comes from the first exchange (here the fake upstream writes it).
    titled = await wait_for(lambda: _title(me, session.id))
    assert titled and titled == titled.strip()
    session = await get_session(me, session.id)
    assert session.message_count == 2 and session.latest_message_preview.startswith("alpha0 βeta1")


async def _title(who, session_id):
    return (await get_session(who, session_id)).title


async def test_drop_and_resume_at_20_random_points_yields_the_stored_text(me, fake_model):
    rng = random.Random(5)
    session = await new_session(me, title="resume")
    tokens = 60
    for attempt in range(20):
        request_id = f"r{attempt}"
        call = me.chat.Chat(
            chat_pb2.ChatRequest(
                session_id=session.id, content=f"[tokens={tokens} delay=0.002] go", request_id=request_id
            ),
            metadata=me.md,
        )
        keep = rng.randint(0, tokens + 1)  # events read before the connection drops (0: before `started`)
        got = []
        for _ in range(keep):
            message = await call.read()
            if message is grpc.aio.EOF:
                break
            got.append(message)
        call.cancel()
        if rng.random() < 0.3:
            await asyncio.sleep(0.2)  # sometimes resume after the turn ended
        if got:
            rest = await resume(me, got[0].turn_id, got[-1].seq)
        else:  # never saw the turn id: retrying with the same request_id re-attaches
            rest = [
                m
                async for m in me.chat.Chat(
                    chat_pb2.ChatRequest(session_id=session.id, content="ignored on retry", request_id=request_id),
                    metadata=me.md,
                )
            ]
        every = [*got, *rest]
        assert [m.seq for m in every] == list(range(1, len(every) + 1)), f"attempt {attempt}: gap or duplicate"
        assert kinds(every)[-1] == ENDED
        turn_id = every[0].event.started.turn_id
        stored = await answer_of(me, session.id, turn_id)
        assert text_of(every) == stored.content == expected_answer(tokens), f"attempt {attempt} (kept {keep})"
        assert every[-1].event.ended.answer.content == stored.content
    assert (await get_session(me, session.id)).message_count == 40


@pytest.mark.app_settings(chat_event_log_ttl_seconds=0.3)
async def test_a_turn_whose_log_expired_replays_from_the_stored_message(me, fake_model):
    session = await new_session(me)
    events = await chat_all(me, session.id, "[tokens=12 delay=0.01] hi")
    assert kinds(events).count("token") >= 3
    await asyncio.sleep(0.5)
    last = events[-1].seq
    replay = await resume(me, events[0].turn_id, 0)
    assert kinds(replay) == ["started", "token", ENDED]
    assert [m.seq for m in replay] == [1, last - 1, last]
    assert replay[0].event.started == events[0].event.started
    assert replay[1].event.token.text == expected_answer(12)
    assert replay[2].event.ended.answer == events[-1].event.ended.answer
    assert replay[2].event.ended.context == events[-1].event.ended.context
    assert [m.seq for m in await resume(me, events[0].turn_id, 1)] == [last - 1, last]
    assert await resume(me, events[0].turn_id, last) == []
    with pytest.raises(grpc.aio.AioRpcError) as failure:  # holding part of the text: cannot resume exactly
        await resume(me, events[0].turn_id, 2)
    assert failure.value.code() == grpc.StatusCode.OUT_OF_RANGE and reason(failure.value) == "STREAM_EXPIRED"


async def test_stop_ends_every_reader_keeps_the_partial_answer_and_closes_the_upstream(me, fake_model, upstream):
    session = await new_session(me)
    call = me.chat.Chat(
        chat_pb2.ChatRequest(session_id=session.id, content="[tokens=2000 delay=0.01] long"), metadata=me.md
    )
    got = [await call.read() for _ in range(6)]
    turn_id = got[0].turn_id
    follower = asyncio.create_task(resume(me, turn_id, 0))
    await asyncio.sleep(0.05)

    started = time.monotonic()
    stop = await me.chat.StopTurn(chat_pb2.StopTurnRequest(turn_id=turn_id), metadata=me.md)
    assert stop.stopped
    while (message := await call.read()) is not grpc.aio.EOF:
        got.append(message)
    elapsed = time.monotonic() - started
    # The whole answer takes 20 s: ending within 10 s is being stopped, not running on (the content checks below).
    assert elapsed < 10, f"the stream ended {elapsed:.1f} s after StopTurn"

    ended = got[-1].event.ended
    assert kinds(got)[-1] == ENDED and ended.finish_reason == common_pb2.FINISH_REASON_CANCELLED
    assert ended.answer.status == chat_pb2.MESSAGE_STATUS_STOPPED
    assert ended.answer.content == text_of(got) and 0 < len(ended.answer.content) < len(expected_answer(2000))
    stored = await answer_of(me, session.id, turn_id)
    assert stored.status == chat_pb2.MESSAGE_STATUS_STOPPED and stored.content == ended.answer.content
    other = await asyncio.wait_for(follower, 15)
    assert as_chat(other) == as_chat(got)
    assert await wait_for(lambda: _closed(upstream), 15), "the upstream stream was not closed"
    assert upstream.completed == 0

    again = await me.chat.StopTurn(chat_pb2.StopTurnRequest(turn_id=turn_id), metadata=me.md)
    assert not again.stopped  # idempotent: already ended
    # The session takes a new turn at once.
    assert kinds(await chat_all(me, session.id, "[tokens=2] next"))[-1] == ENDED


async def _closed(upstream):
    return upstream.closed_early >= 1


async def test_disconnecting_does_not_stop_a_turn_unless_asked(me, fake_model, upstream):
    session = await new_session(me)
    call = me.chat.Chat(
        chat_pb2.ChatRequest(session_id=session.id, content="[tokens=40 delay=0.005] keep going"), metadata=me.md
    )
    first = [await call.read() for _ in range(3)]
    call.cancel()
    turn_id = first[0].turn_id

    async def finished():
        answer = await answer_of(me, session.id, turn_id)
        return answer if answer.status != chat_pb2.MESSAGE_STATUS_STREAMING else None

    answer = await wait_for(finished)
    assert answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE and answer.content == expected_answer(40)

    call = me.chat.Chat(
        chat_pb2.ChatRequest(
            session_id=session.id, content="[tokens=4000 delay=0.005] stop when I leave", stop_on_disconnect=True
        ),
        metadata=me.md,
    )
    first = [await call.read() for _ in range(3)]
    call.cancel()
    turn_id = first[0].turn_id
    answer = await wait_for(finished)
    assert answer.status == chat_pb2.MESSAGE_STATUS_STOPPED
    assert answer.finish_reason == common_pb2.FINISH_REASON_CANCELLED
    assert 0 < len(answer.content) < len(expected_answer(4000))
    assert await wait_for(lambda: _closed(upstream), 15)


async def test_one_turn_per_session_and_retries_reattach(me, fake_model, upstream):
    session = await new_session(me)
    call = me.chat.Chat(
        chat_pb2.ChatRequest(session_id=session.id, content="[tokens=30 delay=0.01] first", request_id="req-1"),
        metadata=me.md,
    )
    first = await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat_all(me, session.id, "second")
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(failure.value) == "TURN_IN_PROGRESS"
    retried = await chat_all(me, session.id, "first", request_id="req-1")
    assert retried[0].SerializeToString() == first.SerializeToString()
    assert text_of(retried) == expected_answer(30)
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert [first, *rest] == retried
    again = await chat_all(me, session.id, "first", request_id="req-1")  # after the end: replay, no new turn
    assert again == retried
    asked = [r for r in upstream.requests if r["messages"][-1]["content"] == "[tokens=30 delay=0.01] first"]
    assert len(asked) == 1  # retries asked nothing upstream
    assert (await get_session(me, session.id)).message_count == 2


async def test_history_fits_the_context_window_oldest_turns_dropped_first(me, upstream):
    small = await register_fake_model(
        me.llm, upstream.base_url, name="small-ctx", context_length=400, make_default=False
    )
    session = await new_session(me, model_id=small.id, system_prompt="S" * 30)
    pairs = [
        chat_pb2.MessagePair(question=f"question {i} " + "q" * 120, answer=f"answer {i} " + "a" * 120) for i in range(8)
    ]
    await me.chat.AddMessages(chat_pb2.AddMessagesRequest(session_id=session.id, pairs=pairs), metadata=me.md)

    events = await chat_all(me, session.id, "[tokens=3] and now?", max_tokens=100)
    context = events[-1].event.ended.context
    assert context.budget_tokens == 400 - 100
    assert context.used_tokens <= context.budget_tokens
    sent = next(r["messages"] for r in upstream.requests if r["messages"][-1]["content"] == "[tokens=3] and now?")
    kept = (len(sent) - 2) // 2
    assert 0 < kept < 8 and context.dropped_turns == 8 - kept
    assert sent[0] == {"role": "system", "content": "S" * 30} and sent[-1]["content"] == "[tokens=3] and now?"
    assert [m["content"].split(" ")[1] for m in sent[1:-1:2]] == [str(i) for i in range(8 - kept, 8)]

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat_all(me, session.id, "word " * 400)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(failure.value) == "CONTEXT_TOO_LONG"


async def test_upstream_failures_end_the_turn_in_band_and_keep_what_was_said(me, fake_model):
    session = await new_session(me)
    events = await chat_all(me, session.id, "[status=400] bad request upstream")
    assert kinds(events) == ["started", "error"]
    status = events[-1].event.error
    assert status.code != 0 and error_info(status).reason.startswith("UPSTREAM")
    answer = await answer_of(me, session.id, events[0].turn_id)
    assert answer.status == chat_pb2.MESSAGE_STATUS_FAILED and answer.error.code == status.code

    events = await chat_all(me, session.id, "[tokens=20 fail_at=7] cut")
    assert kinds(events)[-1] == "error" and text_of(events) == expected_answer(7)
    answer = await answer_of(me, session.id, events[0].turn_id)
    assert answer.status == chat_pb2.MESSAGE_STATUS_FAILED and answer.content == expected_answer(7)

    # Failed turns stay out of the next prompt's history.
    assert kinds(await chat_all(me, session.id, "[tokens=2] fine now"))[-1] == ENDED
