"""Sessions bound to a published flow: each question runs the flow through the flow service; a flow that asks
for input ends the turn with an INPUT_REQUEST message and the next Chat call's input answers it."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from tests.chat.helpers import as_chat, chat_all, get_session, kinds, messages, new_session, reason, text_of
from typecase.v1 import chat_pb2, flow_pb2, flow_pb2_grpc


def node(node_id: str, kind: str, **params) -> flow_pb2.Node:
    message = flow_pb2.Node(id=node_id, type=flow_pb2.NodeType.Value(f"NODE_TYPE_{kind.upper()}"), name=node_id)
    if params:
        message.params.update(params)
    return message


def chain(*nodes: flow_pb2.Node) -> flow_pb2.Graph:
    return flow_pb2.Graph(
        nodes=list(nodes),
        edges=[flow_pb2.Edge(id=f"{a.id}-{b.id}", source=a.id, target=b.id) for a, b in zip(nodes, nodes[1:])],
    )


async def published_flow(channel, md, name: str, graph: flow_pb2.Graph, publish: bool = True) -> flow_pb2.Flow:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    flow = (
        await flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name, graph=graph)), metadata=md)
    ).flow
    if publish:
        flow = (await flows.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=md)).flow
    return flow


async def test_a_flow_session_answers_pauses_for_input_and_resumes(channel, me):
    graph = chain(
        node("start", "start", variables=[{"name": "question"}]),
        node("ask", "input", mode="form", prompt="What is your name?", fields=[{"name": "name", "required": True}]),
        node("out", "output", template="Hi {{ask.name}}, you asked: {{question}}"),
        node("end", "end", outputs={"text": "{{out.text}}"}),
    )
    flow = await published_flow(channel, me.md, "greeter", graph)
    session = await new_session(me, flow_id=flow.id)
    assert session.kind == chat_pb2.SESSION_KIND_FLOW and session.app_name == "greeter"
    assert session.flow_version_id == flow.current_version_id and not session.model_id

    first = await chat_all(me, session.id, "where is the station?")
    assert kinds(first)[0] == "started" and first[0].event.started.run_id
    run_id = first[0].event.started.run_id
    assert "input_required" in kinds(first) and kinds(first)[-1] == "ended"
    assert all(e.event.node.run_id == run_id for e in first if e.event.HasField("node"))
    asked = first[-1].event.ended.answer
    assert asked.category == chat_pb2.MESSAGE_CATEGORY_INPUT_REQUEST and asked.input_required.node_id == "ask"
    assert asked.content == "What is your name?" and asked.status == chat_pb2.MESSAGE_STATUS_COMPLETE

    with pytest.raises(grpc.aio.AioRpcError) as failure:  # an empty message answers nothing
        await chat_all(me, session.id, "")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    answer = struct_pb2.Struct()
    answer.update({"name": "Ada"})
    second = await chat_all(me, session.id, "", input_node_id="ask", input=answer)
    assert kinds(second)[0] == "started" and second[0].event.started.run_id == run_id  # the same run, resumed
    assert text_of(second) == "Hi Ada, you asked: where is the station?"
    ended = second[-1].event.ended
    assert ended.answer.status == chat_pb2.MESSAGE_STATUS_COMPLETE and ended.answer.content == text_of(second)
    assert [s.node.node_id for s in ended.answer.steps][-2:] == ["out", "end"]
    assert all(s.run_id == run_id for s in ended.answer.steps)

    stored = await messages(me, session.id)
    assert [m.category for m in stored] == [
        chat_pb2.MESSAGE_CATEGORY_QUESTION,
        chat_pb2.MESSAGE_CATEGORY_INPUT_REQUEST,
        chat_pb2.MESSAGE_CATEGORY_QUESTION,
        chat_pb2.MESSAGE_CATEGORY_ANSWER,
    ]
    assert stored[-1] == ended.answer
    session = await get_session(me, session.id)
    assert session.flow_version_id == flow.current_version_id and session.message_count == 4

    # The turn replays with its run id after the fact.
    replay = [
        m
        async for m in me.chat.StreamTurnEvents(
            chat_pb2.StreamTurnEventsRequest(turn_id=second[0].turn_id), metadata=me.md
        )
    ]
    # Same layout, so a StreamTurnEvents message reads as the ChatResponse it replays (compared as messages:
    # Struct fields have no canonical byte order).
    assert as_chat(replay) == second


async def test_flow_sessions_need_an_online_flow(channel, me):
    draft = await published_flow(
        channel,
        me.md,
        "draft",
        chain(node("start", "start"), node("out", "output", template="x"), node("end", "end")),
        publish=False,
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await new_session(me, flow_id=draft.id)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION and reason(failure.value) == "FLOW_NOT_PUBLISHED"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await new_session(me, flow_id="01JNOSUCHFLOW0000000000000")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_flow_start_variable_of_type_file_receives_the_chats_attachments(channel, me):
    graph = chain(
        node(
            "start",
            "start",
            variables=[
                {"name": "question"},
                {"name": "report", "type": "file"},
                {"name": "others", "type": "file", "list": True},
            ],
        ),
        node(
            "out",
            "output",
            template="{{report.name}} ({{report.size_bytes}} bytes, {{report.mime_type}}); "
            "then {{others | length}}: {{others[0].url}}; asked: {{question}}",
        ),
        node("end", "end", outputs={"text": "{{out.text}}"}),
    )
    flow = await published_flow(channel, me.md, "file reader", graph)
    session = await new_session(me, flow_id=flow.id)
    events = await chat_all(
        me,
        session.id,
        "summarise",
        attachments=[
            chat_pb2.Attachment(name="q3.txt", mime_type="text/plain", data=b"twelve bytes"),
            chat_pb2.Attachment(name="logo.png", mime_type="image/png", url="https://example.com/logo.png"),
        ],
    )
    assert text_of(events) == "q3.txt (12 bytes, text/plain); then 1: https://example.com/logo.png; asked: summarise"
