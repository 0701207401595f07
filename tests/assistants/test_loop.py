"""The agent loop alone (server/agent/loop.py) over the real LLM service and ToolsApi: a scripted fake OpenAI
upstream asks for tools of a real MCP server and real OpenAPI services, the loop runs them (in parallel when the
model asked for several), feeds the results back, and ends with a final answer, at max steps, or when stopped."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.assistants.support import slow_stats
from typecase.server.agent.loop import AgentLoop, AgentSettings, Finished, StepCompleted, TextDelta, ToolUpdate
from typecase.server.agent_wiring import catalog_toolbox
from typecase.server.rpc import principal as caller
from typecase.v1 import common_pb2, llm_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


def question(text: str) -> list[llm_pb2.ChatMessage]:
    return [llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=text)]


async def agent(aapp, world, tool_ids, **settings) -> AgentLoop:
    toolbox = await catalog_toolbox(aapp.servicers["ToolService"].api, tool_ids, [], False, 0)
    return AgentLoop(aapp.servicers["LLMService"].generate, toolbox, AgentSettings(world.model_id, **settings))


class as_user:
    def __init__(self, world):
        self.world = world

    def __enter__(self):
        self.token = caller.bind(caller.Principal(self.world.user.user_id, caller.ROLE_USER))

    def __exit__(self, *exc):
        caller.bind_reset(self.token)


async def test_two_tool_steps_one_parallel_then_a_final_answer(aapp, world, upstream):
    upstream.program(
        [{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "listPets", "arguments": {"limit": 1}}],
        [{"name": "echo", "arguments": {"text": "5 and Rex"}}],
        "answer",
    )
    with as_user(world):
        loop = await agent(aapp, world, [world.add, world.echo, world.list_pets], system="Be brief.")
        events = [e async for e in loop.run(question("Add 2 and 3, and name a pet"))]
    updates = [e.step for e in events if isinstance(e, ToolUpdate)]
    # both calls of step 1 start before either ends; each end is announced as it comes (in completion order)
    assert [(u.name, u.status, u.step) for u in updates[:2]] == [
        ("add", common_pb2.TOOL_STEP_STATUS_RUNNING, 1),
        ("listPets", common_pb2.TOOL_STEP_STATUS_RUNNING, 1),
    ]
    assert sorted((u.name, u.status, u.step) for u in updates[2:4]) == [
        ("add", common_pb2.TOOL_STEP_STATUS_SUCCEEDED, 1),
        ("listPets", common_pb2.TOOL_STEP_STATUS_SUCCEEDED, 1),
    ]
    assert [(u.name, u.status, u.step) for u in updates[4:]] == [
        ("echo", common_pb2.TOOL_STEP_STATUS_RUNNING, 2),
        ("echo", common_pb2.TOOL_STEP_STATUS_SUCCEEDED, 2),
    ]
    ends = {u.name: u for u in updates[2:4]}
    updates[2:4] = [ends["add"], ends["listPets"]]
    assert updates[2].result_preview == "5" and "Rex" in updates[3].result_preview
    assert updates[3].result_size_bytes == len(updates[3].result_preview.encode())
    assert updates[0].tool_id == world.add and updates[0].arguments == '{"a": 2, "b": 3}'
    completed = [e for e in events if isinstance(e, StepCompleted)]
    assert [c.number for c in completed] == [1, 2]
    assert [m.role for m in completed[0].messages] == [
        common_pb2.MESSAGE_ROLE_ASSISTANT,
        common_pb2.MESSAGE_ROLE_TOOL,
        common_pb2.MESSAGE_ROLE_TOOL,
    ]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == common_pb2.FINISH_REASON_STOP
    assert finished.steps == 3 and finished.text == "Answer: 5 and Rex"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Answer: 5 and Rex"
    # what the model was shown: the system prompt, then both results of the parallel step, in call order
    third = upstream.seen[-1].body["messages"]
    assert third[0] == {"role": "system", "content": "Be brief."}
    tools_shown = [m["content"] for m in third if m["role"] == "tool"]
    assert tools_shown[0] == "5" and "Rex" in tools_shown[1] and tools_shown[2] == "5 and Rex"
    assert upstream.seen[-3].body.get("parallel_tool_calls", True)


async def test_max_steps_ends_with_its_own_finish_reason_and_a_notice(aapp, world, upstream):
    upstream.program(*[[{"name": "add", "arguments": {"a": 1, "b": i}}] for i in range(5)])
    with as_user(world):
        loop = await agent(aapp, world, [world.add], max_steps=2)
        events = [e async for e in loop.run(question("loop forever"))]
    finished = events[-1]
    assert finished.finish_reason == common_pb2.FINISH_REASON_MAX_STEPS and finished.steps == 2
    assert "2 steps" in finished.notice and "add" in finished.notice
    assert len([e for e in events if isinstance(e, StepCompleted)]) == 1  # the 2nd step's calls never ran


async def test_a_failing_call_is_shown_to_the_model_which_continues(aapp, world, upstream):
    upstream.program(
        [{"name": "nope", "arguments": {}}, {"name": "add", "arguments": {"a": "x"}}],
        "answer",
    )
    with as_user(world):
        loop = await agent(aapp, world, [world.add])
        events = [e async for e in loop.run(question("?"))]
    ended = [e.step for e in events if isinstance(e, ToolUpdate) and e.step.status != 1]
    assert [(s.status, s.reason) for s in ended] == [
        (common_pb2.TOOL_STEP_STATUS_FAILED, "TOOL_NOT_FOUND"),
        (common_pb2.TOOL_STEP_STATUS_FAILED, "TOOL_ARGUMENTS_INVALID"),
    ]
    assert events[-1].finish_reason == common_pb2.FINISH_REASON_STOP
    assert events[-1].text.startswith("Answer: Error (TOOL_NOT_FOUND)")


async def test_stopping_during_a_slow_tool_closes_its_request_within_two_seconds(aapp, world, upstream):
    before = (await slow_stats(world.slow_url)).get("wait.closed", 0)
    upstream.program([{"name": "wait", "arguments": {"seconds": 30}}], "answer")
    seen: list = []
    with as_user(world):
        loop = await agent(aapp, world, [world.wait])

        async def consume():
            async for event in loop.run(question("wait")):
                seen.append(event)

        task = asyncio.create_task(consume())
        while not any(isinstance(e, ToolUpdate) for e in seen):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while (await slow_stats(world.slow_url)).get("wait.closed", 0) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stats = await slow_stats(world.slow_url)
    assert stats.get("wait.closed", 0) == before + 1 and stats.get("wait.finished", 0) == 0


async def test_the_local_model_with_tool_choice_required_makes_a_valid_call(aapp, world):
    """The same tools on the built-in SmolLM2 (grammar-constrained decoding): the first step must call a tool, and
    the call's arguments validate against the tool's parameters (the tool server runs it)."""
    with as_user(world):
        toolbox = await catalog_toolbox(aapp.servicers["ToolService"].api, [world.add], [], False, 0)
        loop = AgentLoop(
            aapp.servicers["LLMService"].generate,
            toolbox,
            AgentSettings(
                "smollm2-135m-instruct",
                system="Use the add tool.",
                max_steps=2,
                first_tool_choice=llm_pb2.TOOL_CHOICE_MODE_REQUIRED,
                config=llm_pb2.GenerationConfig(temperature=0, max_tokens=60),
            ),
        )
        events = [e async for e in loop.run(question("What is 2 plus 3?"))]
    updates = [e.step for e in events if isinstance(e, ToolUpdate)]
    assert updates and updates[0].name == "add" and updates[0].step == 1
    ended = [u for u in updates if u.status != common_pb2.TOOL_STEP_STATUS_RUNNING]
    assert ended[0].status == common_pb2.TOOL_STEP_STATUS_SUCCEEDED, ended[0]
    arguments = json.loads(ended[0].arguments)
    assert set(arguments) == {"a", "b"} and all(isinstance(v, int) for v in arguments.values())
    assert ended[0].result_preview == str(arguments["a"] + arguments["b"])
