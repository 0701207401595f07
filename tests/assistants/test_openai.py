"""/openai/v1 with an assistant as the model: the official openai SDK chats with `assistant:<id>` (and by name);
the tool steps run server-side and the client gets only the final answer, streamed or whole."""

from __future__ import annotations

import openai
import pytest

from tests.assistants.test_chat import assistant
from typecase.v1 import assistant_pb2, assistant_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")


def sdk(aapp, world) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{aapp.http_port}/openai/v1", api_key=world.user.credential, max_retries=0
    )


async def test_the_openai_sdk_chats_with_an_assistant_whose_tools_run_server_side(aapp, achannel, world, upstream):
    a = await assistant(
        achannel, world, [world.add, world.list_pets], name="Compat helper", instructions="You are {{assistant_name}}."
    )
    client = sdk(aapp, world)
    try:
        upstream.program(
            [{"name": "add", "arguments": {"a": 20, "b": 22}}, {"name": "listPets", "arguments": {}}], "answer"
        )
        stream = await client.chat.completions.create(
            model=f"assistant:{a.id}",
            messages=[{"role": "user", "content": "sum and pets?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Answer: 42 | ") and "Rex" in text
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        assert chunks[-1].usage is not None
        sent = upstream.seen[-1].body["messages"]
        assert sent[0] == {"role": "system", "content": "You are Compat helper."}

        upstream.program([{"name": "add", "arguments": {"a": 1, "b": 1}}], "answer")
        whole = await client.chat.completions.create(
            model="Compat helper", messages=[{"role": "user", "content": "1+1?"}]
        )
        assert whole.choices[0].message.content == "Answer: 2" and whole.model == "Compat helper"

        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model=f"assistant:{a.id}",
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "function", "function": {"name": "f"}}],
            )
        assert caught.value.body["param"] == "tools"
        listed = [m.id async for m in client.models.list()]
        assert f"assistant:{a.id}" in listed
    finally:
        await client.close()


async def test_another_users_draft_assistant_is_not_a_model_for_them(aapp, achannel, world, upstream):
    from tests.tools.support import new_user

    a = await assistant(achannel, world, [], name="Drafty")
    other = await new_user(achannel, "compat")
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{aapp.http_port}/openai/v1", api_key=other.credential, max_retries=0
    )
    try:
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model=f"assistant:{a.id}", messages=[{"role": "user", "content": "x"}])
        await assistant_pb2_grpc.AssistantServiceStub(achannel).PublishAssistant(
            assistant_pb2.PublishAssistantRequest(assistant_id=a.id), metadata=world.user.md
        )
        upstream.program("answer")
        answer = await client.chat.completions.create(
            model=f"assistant:{a.id}", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.choices[0].finish_reason == "stop"
    finally:
        await client.close()
