"""Embedded mode (SQLite, no Redis): after the server is killed (SIGKILL) and started again, a reader who reloads a
paused flow run's events or a chat turn's events gets the whole history, exactly as it was streamed (issue 18,
finding 6). Real `typecase serve` processes on one data dir; a real fake upstream for the chat model; gRPC and
REST readers."""

from __future__ import annotations

import json
import signal

import grpc
import httpx
import pytest
from google.protobuf import json_format

from tests.conftest import ADMIN_KEY
from tests.flow.support import ADMIN, admin, chain, create_flow, kinds, node, resume, run_flow
from tests.llm.fake_upstream import FakeUpstream
from typecase.v1 import chat_pb2, chat_pb2_grpc, common_pb2, flow_pb2

ENV = {
    "TYPECASE_LLM_LOCAL_ENABLED": "false",
    "TYPECASE_SHUTDOWN_GRACE_SECONDS": "1",
    "TYPECASE_FLOW_FOLLOW_POLL_SECONDS": "0.3",
    "TYPECASE_CHAT_FOLLOW_POLL_SECONDS": "0.3",
    "TYPECASE_CHAT_TURN_LEASE_SECONDS": "2",
}


def as_dicts(messages) -> list[dict]:
    return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]


def ndjson(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text[:500]
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert all("result" in line for line in lines), lines[-1]
    return [line["result"] for line in lines]


def rest_view(grpc_dicts: list[dict]) -> list[tuple[str, str]]:
    """(seq, event kind) of each message: what REST must show the same as gRPC."""
    return [(str(d["seq"]), next(iter(d["event"].keys() - {"time"}))) for d in grpc_dicts]


@pytest.fixture
def restartable(server_factory, tmp_path):
    data_dir = tmp_path / "data"

    def start(name: str):
        server = server_factory(env=ENV, name=name, data_dir=data_dir).start()
        server.wait_ready()
        return server

    return start


async def test_a_paused_runs_events_replay_whole_after_a_kill_and_restart(restartable):
    first = restartable("first")
    async with grpc.aio.insecure_channel(first.grpc_target) as channel:
        root = admin(channel)
        flow = await create_flow(
            root,
            "asks",
            chain(
                node("start", "start"),
                node("hello", "prompt", template="hello"),
                node("ask", "input", prompt="Say something"),
                node("p", "prompt", template="you said {{ask.text}}"),
                node("end", "end", outputs={"said": "{{p.text}}"}),
            ),
        )
        streamed = await run_flow(root, flow.id)
    assert kinds(streamed)[-1] == "input_required" and len(streamed) >= 6
    run_id = streamed[0].run_id
    first.stop(signal.SIGKILL)

    second = restartable("second")
    async with grpc.aio.insecure_channel(second.grpc_target) as channel:
        root = admin(channel)
        replayed = [
            m async for m in root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=run_id), metadata=ADMIN)
        ]
        assert as_dicts(replayed) == as_dicts(streamed)
        async with httpx.AsyncClient(
            base_url=second.http_url, timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ) as http:
            rest = ndjson(await http.get(f"/v1/runs/{run_id}/events"))
        assert rest_view(rest) == rest_view(as_dicts(streamed))

        # The run goes on from there, and the log goes on with it.
        resumed = await resume(root, run_id, "ask", {"text": "hi"})
        assert kinds(resumed)[-1] == "run_finished" and resumed[0].seq == streamed[-1].seq + 1
        whole = [
            m async for m in root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=run_id), metadata=ADMIN)
        ]
        assert [m.seq for m in whole] == list(range(1, resumed[-1].seq + 1))


async def use_fake_model(server, upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(
        base_url=server.http_url, timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as http:
        provider = (
            await http.post(
                "/v1/providers",
                json={"name": "fake", "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE", "base_url": upstream.base_url + "/v1"},
            )
        ).json()["provider"]
        model = (
            await http.post(
                "/v1/models",
                json={"provider_id": provider["id"], "name": "fake-model", "type": "MODEL_TYPE_LLM", "online": True},
            )
        ).json()["model"]
        assert (await http.patch("/v1/llm/defaults", json={"chat_model_id": model["id"]})).status_code == 200


async def test_a_chat_turns_events_replay_whole_after_a_kill_and_restart(restartable):
    upstream = FakeUpstream(tokens=6, token_delay=0.05).start()
    try:
        first = restartable("first")
        await use_fake_model(first, upstream)
        async with grpc.aio.insecure_channel(first.grpc_target) as channel:
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            session = (
                await chat.CreateSession(
                    chat_pb2.CreateSessionRequest(session=chat_pb2.Session(title="kept")), metadata=ADMIN
                )
            ).session
            streamed = [
                m async for m in chat.Chat(chat_pb2.ChatRequest(session_id=session.id, content="hi"), metadata=ADMIN)
            ]
        tokens = [m for m in streamed if m.event.HasField("token")]
        assert len(tokens) >= 3, as_dicts(streamed)  # token by token, not one stored blob
        turn_id = streamed[0].turn_id
        first.stop(signal.SIGKILL)

        second = restartable("second")
        async with grpc.aio.insecure_channel(second.grpc_target) as channel:
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            replayed = [
                m
                async for m in chat.StreamTurnEvents(chat_pb2.StreamTurnEventsRequest(turn_id=turn_id), metadata=ADMIN)
            ]
        assert as_dicts(replayed) == as_dicts(streamed)
        async with httpx.AsyncClient(
            base_url=second.http_url, timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ) as http:
            rest = ndjson(await http.get(f"/v1/turns/{turn_id}/events"))
            assert rest_view(rest) == rest_view(as_dicts(streamed))
            tail = ndjson(await http.get(f"/v1/turns/{turn_id}/events", params={"after_seq": 2}))
            assert [int(r["seq"]) for r in tail] == [m.seq for m in streamed if m.seq > 2]
    finally:
        upstream.stop()


async def test_a_turn_killed_mid_answer_is_continued_and_its_log_keeps_what_was_streamed(restartable):
    """Before, the embedded log died with the process and such a turn could only be failed; now the restarted
    server continues it (as another replica would with Redis) and its log starts with what readers already saw."""
    upstream = FakeUpstream(tokens=12, token_delay=0.25).start()
    try:
        first = restartable("first")
        await use_fake_model(first, upstream)
        async with grpc.aio.insecure_channel(first.grpc_target) as channel:
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            session = (
                await chat.CreateSession(
                    chat_pb2.CreateSessionRequest(session=chat_pb2.Session(title="cut")), metadata=ADMIN
                )
            ).session
            stream = chat.Chat(chat_pb2.ChatRequest(session_id=session.id, content="hi"), metadata=ADMIN)
            seen = []
            while sum(1 for m in seen if m.event.HasField("token")) < 3:
                seen.append(await stream.read())
        first.stop(signal.SIGKILL)

        second = restartable("second")
        async with grpc.aio.insecure_channel(second.grpc_target) as channel:
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            replayed = [
                m
                async for m in chat.StreamTurnEvents(
                    chat_pb2.StreamTurnEventsRequest(turn_id=seen[0].turn_id), metadata=ADMIN, timeout=90
                )
            ]
        assert as_dicts(replayed[: len(seen)]) == as_dicts(seen)  # what was streamed before the kill, as it was
        assert [m.seq for m in replayed] == list(range(1, len(replayed) + 1))
        ended = replayed[-1].event
        assert ended.HasField("ended") and ended.ended.finish_reason == common_pb2.FINISH_REASON_STOP, ended
    finally:
        upstream.stop()
