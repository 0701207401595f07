"""An assistant turn whose replica dies mid-tool-call is continued at its last step (turns.take_over): the death is
simulated in-process (the turn's log writer and task stopped without ending the log, its lease expired), then the
takeover runs. A call whose result was logged is never run again; an unlogged call is run again only when its
tool is idempotent (an OpenAPI GET), otherwise the interruption is its result and the model goes on.
tests/cluster covers the same with a SIGKILLed replica process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.assistants.support import slow_stats
from tests.assistants.test_chat import assistant, session, tool_steps
from typecase.server.chat.models import ChatTurnRow
from typecase.server.infra.sql import utcnow
from typecase.v1 import chat_pb2, chat_pb2_grpc, common_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def kill_turn(aapp, turn_id: str) -> None:
    """What a SIGKILL leaves: the log as written so far, the row RUNNING with a lapsed lease, nothing running."""
    turns = aapp.servicers["ChatService"].turns
    turn = turns.local[turn_id]
    turn.writer.cancel()
    turn.abandoned = True
    turn.task.cancel()
    await asyncio.gather(turn.task, turn.writer, return_exceptions=True)
    turns.local.pop(turn_id, None)
    async with aapp.resources.db.session() as db:
        await db.execute(
            update(ChatTurnRow)
            .where(ChatTurnRow.id == turn_id)
            .values(lease_expire_time=utcnow() - timedelta(seconds=60))
        )


async def start_and_kill(aapp, achannel, world, upstream, tool_ids, plan, logged_when):
    a = await assistant(achannel, world, tool_ids, name=f"Durable {len(upstream.seen)}")
    s = await session(achannel, world, a.id)
    upstream.program(*plan)
    chat = chat_pb2_grpc.ChatServiceStub(achannel)
    stream = chat.Chat(chat_pb2.ChatRequest(session_id=s.id, content="go"), metadata=world.user.md)
    seen = []
    async for response in stream:
        seen.append(response)
        if logged_when(tool_steps(seen)):
            break
    stream.cancel()
    await asyncio.sleep(0.2)  # the events seen are in the shared log (readers see only logged events)
    turn_id = seen[0].turn_id
    await kill_turn(aapp, turn_id)
    taken = await aapp.servicers["ChatService"].turns.take_over(turn_id)
    assert taken
    replay = [
        r
        async for r in chat.StreamTurnEvents(chat_pb2.StreamTurnEventsRequest(turn_id=turn_id), metadata=world.user.md)
    ]
    return seen, replay


async def test_a_logged_result_is_not_rerun_and_a_non_idempotent_call_is_recorded_as_interrupted(
    aapp, achannel, world, upstream
):
    before = await slow_stats(world.slow_url)

    def wait_logged(steps):
        return any(s.name == "wait" and s.status == common_pb2.TOOL_STEP_STATUS_SUCCEEDED for s in steps)

    seen, replay = await start_and_kill(
        aapp,
        achannel,
        world,
        upstream,
        [world.order, world.wait],
        [
            [
                {"name": "placeOrder", "arguments": {"body": {"item": "book", "seconds": 30}}},
                {"name": "wait", "arguments": {"seconds": 0.2}},
            ],
            "answer",
        ],
        wait_logged,
    )
    ended = replay[-1].event.ended
    assert replay[-1].event.WhichOneof("kind") == "ended", replay[-1]
    assert ended.finish_reason == common_pb2.FINISH_REASON_STOP
    steps = {x.tool.name: x.tool for x in ended.answer.steps}
    assert steps["placeOrder"].status == common_pb2.TOOL_STEP_STATUS_CANCELLED
    assert steps["placeOrder"].reason == "TOOL_INTERRUPTED"
    assert steps["wait"].status == common_pb2.TOOL_STEP_STATUS_SUCCEEDED
    assert "interrupted" in ended.answer.content and "waited-0.2" in ended.answer.content
    after = await slow_stats(world.slow_url)
    assert after.get("order.started", 0) - before.get("order.started", 0) == 1  # never placed twice
    assert after.get("wait.started", 0) - before.get("wait.started", 0) == 1  # its logged result was reused
    assert [r.seq for r in replay] == list(range(1, len(replay) + 1))  # one log, no gap


async def test_an_unlogged_idempotent_call_is_run_again(aapp, achannel, world, upstream):
    before = await slow_stats(world.slow_url)

    def wait_running(steps):
        return any(s.name == "wait" and s.status == common_pb2.TOOL_STEP_STATUS_RUNNING for s in steps)

    seen, replay = await start_and_kill(
        aapp,
        achannel,
        world,
        upstream,
        [world.wait],
        [[{"name": "wait", "arguments": {"seconds": 1.5}}], "answer"],
        wait_running,
    )
    ended = replay[-1].event.ended
    assert ended.answer.content == 'Answer: {"token":"waited-1.5"}'
    assert [x.tool.status for x in ended.answer.steps] == [common_pb2.TOOL_STEP_STATUS_SUCCEEDED]
    after = await slow_stats(world.slow_url)
    assert after.get("wait.started", 0) - before.get("wait.started", 0) == 2
