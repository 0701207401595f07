"""Two real `typecase serve` processes sharing PostgreSQL and Redis: a turn started on one is followed and stopped
from the other, and a turn whose process dies does not stay "streaming"."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
import redis
from cryptography.fernet import Fernet

from tests.chat.conftest import caller, register_fake_model
from tests.chat.fake_upstream import FakeUpstream, expected_answer
from tests.chat.helpers import as_chat, error_info, kinds, messages, new_session, text_of
from tests.conftest import ADMIN_KEY, REDIS_URL
from typecase.v1 import chat_pb2, common_pb2

REDIS_DB = 7


@pytest.fixture
def shared_env(pg_database_url):
    client = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
    client.flushdb()
    client.close()
    return {
        "TYPECASE_DATABASE_URL": pg_database_url,
        "TYPECASE_REDIS_URL": f"{REDIS_URL}/{REDIS_DB}",
        "TYPECASE_ADMIN_API_KEY": ADMIN_KEY,
        "TYPECASE_SECRET_KEY": Fernet.generate_key().decode(),
        "TYPECASE_LLM_LOCAL_ENABLED": "false",
        "TYPECASE_SHUTDOWN_GRACE_SECONDS": "1",
        # Short lease so that a dead replica's turn is noticed within seconds; not much shorter, or a live turn's
        # renewal delayed by a loaded machine lets the other replica take it for dead.
        "TYPECASE_CHAT_TURN_LEASE_SECONDS": "3",
        "TYPECASE_CHAT_REAP_INTERVAL_SECONDS": "0.5",
        "TYPECASE_CHAT_FOLLOW_POLL_SECONDS": "0.3",
        # Turns of a dead replica are failed, not continued (tests/cluster covers continuing them).
        "TYPECASE_CHAT_MAX_TAKEOVERS": "0",
    }


async def read_until(call, count: int) -> list:
    got = []
    while len(got) < count:
        message = await call.read()
        assert message is not grpc.aio.EOF, f"the stream ended after {len(got)} of {count} messages: {got}"
        got.append(message)
    return got


async def drain(call) -> list:
    got = []
    while (message := await call.read()) is not grpc.aio.EOF:
        got.append(message)
    return got


async def test_a_turn_is_followed_and_stopped_from_another_replica_and_survives_its_replica_dying(
    server_factory, shared_env
):
    upstream = await FakeUpstream().start()
    first = server_factory(env=shared_env, name="first").start()
    second = server_factory(env=shared_env, name="second").start()
    await asyncio.to_thread(first.wait_ready)
    await asyncio.to_thread(second.wait_ready)
    try:
        async with (
            grpc.aio.insecure_channel(first.grpc_target) as ch1,
            grpc.aio.insecure_channel(second.grpc_target) as ch2,
        ):
            on_first, on_second = caller(ch1, ADMIN_KEY), caller(ch2, ADMIN_KEY)
            await register_fake_model(on_first.llm, upstream.base_url)
            session = await new_session(on_first, title="replicas")

            # 1. Started on the first replica, followed and stopped from the second.
            call = on_first.chat.Chat(
                chat_pb2.ChatRequest(session_id=session.id, content="[tokens=3000 delay=0.01] a long answer"),
                metadata=on_first.md,
            )
            try:
                got = await read_until(call, 5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{first.output()[-3000:]}\n{second.output()[-3000:]}") from None
            turn_id = got[0].turn_id
            remote = on_second.chat.StreamTurnEvents(
                chat_pb2.StreamTurnEventsRequest(turn_id=turn_id), metadata=on_second.md
            )
            remote_got = await read_until(remote, 3)  # replayed from the shared log, then live

            started = time.monotonic()
            stop = asyncio.ensure_future(
                on_second.chat.StopTurn(chat_pb2.StopTurnRequest(turn_id=turn_id), metadata=on_second.md)
            )
            got += await drain(call)
            elapsed = time.monotonic() - started
            assert (await stop).stopped
            # The whole answer takes 30 s: a stream that ends within 10 s was stopped, not run to its end.
            assert elapsed < 10, f"the first replica's stream ended {elapsed:.1f} s after the stop"
            ended = got[-1].event.ended
            assert kinds(got)[-1] == "ended" and ended.finish_reason == common_pb2.FINISH_REASON_CANCELLED
            assert ended.answer.status == chat_pb2.MESSAGE_STATUS_STOPPED and ended.answer.content == text_of(got)
            assert 0 < len(ended.answer.content) < len(expected_answer(3000))
            remote_got += await asyncio.wait_for(drain(remote), 30)
            assert as_chat(remote_got) == as_chat(got)
            stored = (await messages(on_second, session.id, turn_id=turn_id))[-1]
            assert stored.status == chat_pb2.MESSAGE_STATUS_STOPPED and stored.content == ended.answer.content
            for _ in range(300):  # up to 30 s: the upstream stream, 30 s long, is closed, not read to its end
                if upstream.closed_early:
                    break
                await asyncio.sleep(0.1)
            assert upstream.closed_early == 1 and upstream.completed == 0

            # 2. The replica running a turn dies: the other one fails the turn, keeping what was said.
            call = on_first.chat.Chat(
                chat_pb2.ChatRequest(session_id=session.id, content="[tokens=3000 delay=0.01] another long one"),
                metadata=on_first.md,
            )
            got = await read_until(call, 8)
            turn_id = got[0].turn_id
            remote = on_second.chat.StreamTurnEvents(
                chat_pb2.StreamTurnEventsRequest(turn_id=turn_id), metadata=on_second.md
            )
            remote_got = await read_until(remote, 8)
            first.stop(signal.SIGKILL)
            # Unnoticed, the dead replica's turn would stay "streaming" until its turn timeout (10 minutes): noticed
            # through its 3 s lease, it ends within seconds, which 60 s leaves room for on a loaded machine.
            remote_got += await asyncio.wait_for(drain(remote), 60)
            assert kinds(remote_got)[-1] == "error", second.output()[-3000:]
            assert error_info(remote_got[-1].event.error).reason == "UNAVAILABLE"
            assert [m.seq for m in remote_got] == list(range(1, len(remote_got) + 1))
            stored = (await messages(on_second, session.id, turn_id=turn_id))[-1]
            assert stored.status == chat_pb2.MESSAGE_STATUS_FAILED
            assert stored.content == text_of(remote_got) and len(stored.content) > 0
            # The session is free again.
            after = [
                m
                async for m in on_second.chat.Chat(
                    chat_pb2.ChatRequest(session_id=session.id, content="[tokens=3] still there?"),
                    metadata=on_second.md,
                )
            ]
            assert kinds(after)[-1] == "ended"
    finally:
        await upstream.stop()
