"""Chatting with an assistant: a turn runs the agent loop inside the turn machinery. Tool steps are streamed and
logged (a resumed reader sees the same steps as Message.steps), later turns see earlier calls, max steps ends with
its own finish reason, and a stop during a slow tool ends the stream quickly and closes the tool's request."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.assistants.support import slow_stats
from typecase.v1 import assistant_pb2, assistant_pb2_grpc, chat_pb2, chat_pb2_grpc, common_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def assistant(channel, world, tool_ids, **fields) -> assistant_pb2.Assistant:
    stub = assistant_pb2_grpc.AssistantServiceStub(channel)
    return (
        await stub.CreateAssistant(
            assistant_pb2.CreateAssistantRequest(
                assistant=assistant_pb2.Assistant(model_id=world.model_id, tool_ids=tool_ids, **fields)
            ),
            metadata=world.user.md,
        )
    ).assistant


async def session(channel, world, assistant_id: str, **fields) -> chat_pb2.Session:
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    return (
        await chat.CreateSession(
            chat_pb2.CreateSessionRequest(session=chat_pb2.Session(assistant_id=assistant_id, **fields)),
            metadata=world.user.md,
        )
    ).session


async def ask(channel, world, session_id: str, text: str) -> list[chat_pb2.ChatResponse]:
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    return [
        r async for r in chat.Chat(chat_pb2.ChatRequest(session_id=session_id, content=text), metadata=world.user.md)
    ]


def tool_steps(responses) -> list[common_pb2.ToolStep]:
    return [
        r.event.node.tool for r in responses if r.event.WhichOneof("kind") == "node" and r.event.node.HasField("tool")
    ]


async def test_an_assistant_with_an_mcp_and_an_openapi_tool_answers_in_two_tool_steps(achannel, world, upstream):
    a = await assistant(
        achannel,
        world,
        [world.add, world.list_pets, world.echo],
        name="Both tools",
        instructions="You help {{who}} on {{current_date}}.",
        variables=[assistant_pb2.AssistantVariable(name="who", default_value="someone")],
    )
    s = await session(achannel, world, a.id, variables={"who": "Ada"})
    assert s.kind == chat_pb2.SESSION_KIND_ASSISTANT and s.app_name == "Both tools" and s.model_id == world.model_id
    upstream.program(
        [{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "listPets", "arguments": {"limit": 1}}],
        [{"name": "echo", "arguments": {"text": "5 pets: Rex"}}],
        "answer",
    )
    responses = await ask(achannel, world, s.id, "How much is 2+3, and which pet is there?")
    kinds = [r.event.WhichOneof("kind") for r in responses]
    assert kinds[0] == "started" and kinds[-1] == "ended"
    steps = tool_steps(responses)
    assert [(t.name, t.status) for t in steps[:2]] == [
        ("add", common_pb2.TOOL_STEP_STATUS_RUNNING),
        ("listPets", common_pb2.TOOL_STEP_STATUS_RUNNING),
    ]
    assert sorted((t.name, t.status) for t in steps[2:4]) == [
        ("add", common_pb2.TOOL_STEP_STATUS_SUCCEEDED),
        ("listPets", common_pb2.TOOL_STEP_STATUS_SUCCEEDED),
    ]
    assert [(t.name, t.status) for t in steps[4:]] == [
        ("echo", common_pb2.TOOL_STEP_STATUS_RUNNING),
        ("echo", common_pb2.TOOL_STEP_STATUS_SUCCEEDED),
    ]
    ended = responses[-1].event.ended
    assert ended.finish_reason == common_pb2.FINISH_REASON_STOP
    assert ended.answer.content == "Answer: 5 pets: Rex"
    assert sorted((x.tool.name, x.tool.step) for x in ended.answer.steps) == [("add", 1), ("echo", 2), ("listPets", 1)]
    system = upstream.seen[-1].body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You help Ada on 20")

    # a reader resuming mid-turn (Last-Event-ID) sees the same steps; ListMessages stores them
    chat = chat_pb2_grpc.ChatServiceStub(achannel)
    turn_id = responses[0].turn_id
    resumed = [
        r
        async for r in chat.StreamTurnEvents(
            chat_pb2.StreamTurnEventsRequest(turn_id=turn_id, after_seq=responses[2].seq), metadata=world.user.md
        )
    ]
    assert [r.seq for r in resumed] == [r.seq for r in responses[3:]]
    assert tool_steps(resumed) == tool_steps([r for r in responses if r.seq > responses[2].seq])
    assert len(tool_steps(resumed)) >= 4
    stored = await chat.ListMessages(chat_pb2.ListMessagesRequest(session_id=s.id), metadata=world.user.md)
    answer = [m for m in stored.messages if m.category == chat_pb2.MESSAGE_CATEGORY_ANSWER][0]
    assert list(answer.steps) == list(ended.answer.steps)

    # the next turn sees the earlier calls and results
    upstream.program("answer")
    await ask(achannel, world, s.id, "And again?")
    shown = [m["content"] for m in upstream.seen[-1].body["messages"] if m["role"] == "assistant"]
    assert '[tool add({"a": 2, "b": 3}) -> 5]' in shown[0] and "Answer: 5 pets: Rex" in shown[0]


async def test_max_steps_is_the_turns_finish_reason_with_a_notice(achannel, world, upstream):
    a = await assistant(achannel, world, [world.add], name="Looper", max_steps=2)
    s = await session(achannel, world, a.id)
    upstream.program(*[[{"name": "add", "arguments": {"a": i, "b": 1}}] for i in range(4)])
    responses = await ask(achannel, world, s.id, "loop")
    ended = responses[-1].event.ended
    assert ended.finish_reason == common_pb2.FINISH_REASON_MAX_STEPS
    assert "Stopped after 2 steps" in ended.answer.content
    assert ended.answer.finish_reason == common_pb2.FINISH_REASON_MAX_STEPS


async def test_stop_during_a_slow_tool_ends_the_stream_within_two_seconds_and_closes_the_call(
    achannel, world, upstream
):
    a = await assistant(achannel, world, [world.wait], name="Waiter")
    s = await session(achannel, world, a.id)
    before = (await slow_stats(world.slow_url)).get("wait.closed", 0)
    upstream.program([{"name": "wait", "arguments": {"seconds": 30}}], "answer")
    chat = chat_pb2_grpc.ChatServiceStub(achannel)
    stream = chat.Chat(chat_pb2.ChatRequest(session_id=s.id, content="wait please"), metadata=world.user.md)
    responses = []
    async for response in stream:
        responses.append(response)
        if tool_steps([response]):
            break
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await chat.StopTurn(chat_pb2.StopTurnRequest(turn_id=responses[0].turn_id), metadata=world.user.md)
    async for response in stream:
        responses.append(response)
    assert time.monotonic() - started < 2
    ended = responses[-1].event.ended
    assert ended.finish_reason == common_pb2.FINISH_REASON_CANCELLED
    assert [x.tool.status for x in ended.answer.steps] == [common_pb2.TOOL_STEP_STATUS_CANCELLED]
    deadline = time.monotonic() + 2
    while (await slow_stats(world.slow_url)).get("wait.closed", 0) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await slow_stats(world.slow_url)).get("wait.closed", 0) == before + 1


async def test_a_draft_assistant_of_another_user_cannot_be_chatted_with(achannel, world):
    from tests.tools.support import new_user

    a = await assistant(achannel, world, [], name="Private")
    other = await new_user(achannel, "stranger")
    chat = chat_pb2_grpc.ChatServiceStub(achannel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.CreateSession(
            chat_pb2.CreateSessionRequest(session=chat_pb2.Session(assistant_id=a.id)), metadata=other.md
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await assistant_pb2_grpc.AssistantServiceStub(achannel).PublishAssistant(
        assistant_pb2.PublishAssistantRequest(assistant_id=a.id), metadata=world.user.md
    )
    made = await chat.CreateSession(
        chat_pb2.CreateSessionRequest(session=chat_pb2.Session(assistant_id=a.id)), metadata=other.md
    )
    assert made.session.assistant_id == a.id
