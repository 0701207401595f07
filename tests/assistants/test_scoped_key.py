"""Publish an assistant as an API (issue 25): a key restricted to one assistant and the "chat" action chats with
that assistant over gRPC, REST and /openai/v1 (model "assistant:<id>") and gets PERMISSION_DENIED
(API_KEY_RESTRICTED) on everything else: another assistant, a bare model, a model session, the owner's other
sessions, any other RPC."""

from __future__ import annotations

import grpc
import httpx
import openai
import pytest

from tests.assistants.test_chat import assistant
from typecase.v1 import assistant_pb2, assistant_pb2_grpc, auth_pb2, auth_pb2_grpc, chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def denied(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        if hasattr(call, "__aiter__"):
            [m async for m in call]
        else:
            await call
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED, failure.value.details()
    return str(failure.value.trailing_metadata())


async def test_a_key_published_for_one_assistant_chats_with_it_and_nothing_else(aapp, achannel, world):
    published = await assistant(achannel, world, [], name="Published helper")
    other = await assistant(achannel, world, [], name="Private helper")
    chat = chat_pb2_grpc.ChatServiceStub(achannel)
    owners_session = (
        await chat.CreateSession(
            chat_pb2.CreateSessionRequest(session=chat_pb2.Session(model_id=world.model_id)), metadata=world.user.md
        )
    ).session
    auth = auth_pb2_grpc.AuthServiceStub(achannel)
    created = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(
            api_key=auth_pb2.ApiKey(name="site widget", resources=[f"assistant/{published.id}"], actions=["chat"])
        ),
        metadata=world.user.md,
    )
    key = (("authorization", f"Bearer {created.secret}"),)

    # gRPC: a session on the published assistant, and a turn in it.
    session = (
        await chat.CreateSession(
            chat_pb2.CreateSessionRequest(session=chat_pb2.Session(assistant_id=published.id)), metadata=key
        )
    ).session
    replies = [r async for r in chat.Chat(chat_pb2.ChatRequest(session_id=session.id, content="hello"), metadata=key)]
    assert replies[-1].event.WhichOneof("kind") == "ended" and replies[-1].event.ended.answer.content

    # Everything else is refused, naming the key's restriction.
    assistants = assistant_pb2_grpc.AssistantServiceStub(achannel)
    for call in (
        chat.CreateSession(
            chat_pb2.CreateSessionRequest(session=chat_pb2.Session(assistant_id=other.id)), metadata=key
        ),
        chat.CreateSession(
            chat_pb2.CreateSessionRequest(session=chat_pb2.Session(model_id=world.model_id)), metadata=key
        ),
        chat.Chat(chat_pb2.ChatRequest(session_id=owners_session.id, content="read my other chats"), metadata=key),
        chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=key),
        assistants.GetAssistant(assistant_pb2.GetAssistantRequest(assistant_id=published.id), metadata=key),
        auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="escape")), metadata=key),
    ):
        assert "API_KEY_RESTRICTED" in await denied(call)

    # REST: the same session and turn, and the same refusals (403).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{aapp.http_port}", timeout=60) as http:
        headers = {"authorization": f"Bearer {created.secret}"}
        made = await http.post("/v1/sessions", json={"assistant_id": published.id}, headers=headers)
        assert made.status_code == 200, made.text
        turn = await http.post(
            f"/v1/sessions/{made.json()['session']['id']}:chat", json={"content": "hi"}, headers=headers
        )
        assert turn.status_code == 200 and "ended" in turn.text
        assert (await http.post("/v1/sessions", json={"assistant_id": other.id}, headers=headers)).status_code == 403
        assert (await http.get("/v1/sessions", headers=headers)).status_code == 403

    # /openai/v1: the published assistant as the model, nothing else (by id, by name, a bare model, the list).
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{aapp.http_port}/openai/v1", api_key=created.secret, max_retries=0
    )
    try:
        whole = await client.chat.completions.create(
            model=f"assistant:{published.id}", messages=[{"role": "user", "content": "hi"}]
        )
        assert whole.choices[0].message.content
        for model in (f"assistant:{other.id}", "Private helper", world.model_id):
            with pytest.raises(openai.PermissionDeniedError):
                await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.PermissionDeniedError):
            await client.models.list()
    finally:
        await client.close()


async def test_a_key_published_for_one_flow_chats_with_it_in_a_flow_session(achannel, world):
    from tests.chat.test_flow_sessions import chain, published_flow
    from tests.flow.support import node

    graph = chain(
        node("start", "start", variables=[{"name": "question"}]),
        node("out", "output", template="You asked: {{question}}"),
        node("end", "end", outputs={"text": "{{out.text}}"}),
    )
    flow = await published_flow(achannel, world.user.md, "embedded flow", graph)
    other = await published_flow(achannel, world.user.md, "other flow", graph)
    auth = auth_pb2_grpc.AuthServiceStub(achannel)
    created = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(
            api_key=auth_pb2.ApiKey(name="flow widget", resources=[f"flow/{flow.id}"], actions=["chat"])
        ),
        metadata=world.user.md,
    )
    key = (("authorization", f"Bearer {created.secret}"),)
    chat = chat_pb2_grpc.ChatServiceStub(achannel)
    session = (
        await chat.CreateSession(chat_pb2.CreateSessionRequest(session=chat_pb2.Session(flow_id=flow.id)), metadata=key)
    ).session
    replies = [
        r async for r in chat.Chat(chat_pb2.ChatRequest(session_id=session.id, content="opening hours?"), metadata=key)
    ]
    assert replies[-1].event.ended.answer.content == "You asked: opening hours?"
    assert "API_KEY_RESTRICTED" in await denied(
        chat.CreateSession(chat_pb2.CreateSessionRequest(session=chat_pb2.Session(flow_id=other.id)), metadata=key)
    )
