"""The flow API as browsers and the chat domain use it: JSON graphs over REST, runs streamed as NDJSON and SSE
(resumed with Last-Event-ID), CompareFlow, and the Python API chat sessions call per turn."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from tests.flow.support import admin, chain, collect, create_flow, edge, graph, kinds, new_user, node
from typecase.server.rpc import principal
from typecase.v1 import flow_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


def sse_events(lines: list[str]) -> list[tuple[int, dict]]:
    events, seq, data = [], None, None
    for line in lines:
        if line.startswith("id:"):
            seq = int(line[3:].strip())
        elif line.startswith("data:"):
            data = json.loads(line[5:].strip())
        elif line == "" and data is not None:
            events.append((seq, data))
            seq, data = None, None
    return events


GRAPH_JSON = {
    "nodes": [
        {"id": "start", "type": "NODE_TYPE_START", "params": {"variables": [{"name": "who", "type": "text"}]}},
        {
            "id": "ask",
            "type": "NODE_TYPE_INPUT",
            "name": "Ask",
            "params": {
                "mode": "form",
                "prompt": "Age of {{who}}?",
                "fields": [{"name": "age", "type": "number", "required": True}],
            },
        },
        {"id": "p", "type": "NODE_TYPE_PROMPT", "params": {"template": "{{who}} is {{ask.age}}"}},
        {"id": "end", "type": "NODE_TYPE_END", "params": {"outputs": {"text": "{{p.text}}"}}},
    ],
    "edges": [
        {"id": "e1", "source": "start", "target": "ask"},
        {"id": "e2", "source": "ask", "target": "p"},
        {"id": "e3", "source": "p", "target": "end"},
    ],
}


async def test_rest_ndjson_and_sse_with_resume(fapp, fchannel):
    alice = await new_user(fchannel, "http-alice")
    h = {"authorization": dict(alice.md)["authorization"]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fapp.http_port}", timeout=20) as http:
        created = await http.post("/v1/flows", json={"name": "over http", "graph": GRAPH_JSON}, headers=h)
        assert created.status_code == 200, created.text
        flow = created.json()["flow"]
        assert flow["status"] == "FLOW_STATUS_DRAFT"
        assert flow["graph"]["nodes"][1]["params"]["fields"][0]["name"] == "age"

        bad = await http.post(
            f"/v1/flows/{flow['id']}:validate",
            headers=h,
            json={"graph": {"nodes": [{"id": "x", "type": "NODE_TYPE_PROMPT"}]}},
        )
        assert bad.status_code == 200 and bad.json()["valid"] is False
        assert {"MISSING_START", "MISSING_PARAM"} <= {p["code"] for p in bad.json()["problems"]}

        async with http.stream("POST", f"/v1/flows/{flow['id']}:run", json={"inputs": {"who": "Ada"}}, headers=h) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line)["result"] for line in (await r.aread()).decode().splitlines() if line]
        assert "run_started" in lines[0]["event"] and lines[-1]["event"]["input_required"]["prompt"] == "Age of Ada?"
        run_id = lines[0]["run_id"]

        sse = {**h, "accept": "text/event-stream"}
        async with http.stream(
            "POST", f"/v1/runs/{run_id}:resume", headers=sse, json={"node_id": "ask", "input": {"age": 36}}
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            resumed = sse_events([line async for line in r.aiter_lines()])
        assert resumed[0][0] == int(lines[-1]["seq"]) + 1
        assert resumed[-1][1]["event"]["run_finished"]["outputs"] == {"text": "Ada is 36"}

        # A browser that saw up to seq 3 reconnects with Last-Event-ID and gets the rest, pause included.
        async with http.stream("GET", f"/v1/runs/{run_id}/events", headers={**sse, "last-event-id": "3"}) as r:
            rest = sse_events([line async for line in r.aiter_lines()])
        assert [seq for seq, _ in rest] == list(range(4, resumed[-1][0] + 1))

        got = (await http.get(f"/v1/runs/{run_id}", headers=h)).json()["run"]
        assert got["status"] == "RUN_STATUS_FINISHED" and [n["node_id"] for n in got["nodes"]] == [
            "start",
            "ask",
            "p",
            "end",
        ]
        other = await new_user(fchannel, "http-bob")
        hidden = await http.get(f"/v1/runs/{run_id}", headers={"authorization": dict(other.md)["authorization"]})
        assert hidden.status_code == 404


async def test_compare_runs_versions_side_by_side(fchannel):
    root = admin(fchannel)
    hello = chain(
        node("start", "start", variables=[{"name": "who"}]),
        node("p", "prompt", template="Hello {{who}}"),
        node("end", "end", outputs={"text": "{{p.text}}"}),
    )
    flow = await create_flow(root, "compared", hello)
    other = (
        await root.flow.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(
                flow_id=flow.id,
                version=flow_pb2.FlowVersion(
                    name="hi",
                    graph=chain(
                        node("start", "start", variables=[{"name": "who"}]),
                        node("p", "prompt", template="Hi {{who}}"),
                        node("end", "end", outputs={"text": "{{p.text}}"}),
                    ),
                ),
            ),
            metadata=root.md,
        )
    ).version
    events = await collect(
        root.flow.CompareFlow(
            flow_pb2.CompareFlowRequest(
                flow_id=flow.id, version_ids=[flow.current_version_id, other.id], inputs={"who": "Ada"}
            ),
            metadata=root.md,
        )
    )
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    by_version: dict[str, list] = {}
    for e in events:
        by_version.setdefault(e.version_id, []).append(e)
    assert set(by_version) == {flow.current_version_id, other.id}
    finals = {v: es[-1].event.run_finished.outputs["text"] for v, es in by_version.items()}
    assert finals == {flow.current_version_id: "Hello Ada", other.id: "Hi Ada"}
    assert len({es[0].run_id for es in by_version.values()}) == 2
    with pytest.raises(grpc.aio.AioRpcError):
        await collect(
            root.flow.CompareFlow(
                flow_pb2.CompareFlowRequest(flow_id=flow.id, version_ids=[other.id]), metadata=root.md
            )
        )


def dialog() -> flow_pb2.Graph:
    """A chat flow: the user's message, an answer, then wait for the next message (a dialog loop)."""
    return graph(
        [
            node("start", "start", guide="Tell me things."),
            node("ask", "input", prompt="Your turn"),
            node("think", "prompt", template="{{ask.text | upper}}"),
            node("say", "output", template="You said {{think.text}}"),
            node("bye", "condition", cases=[{"handle": "stop", "expression": "lower(ask.text) == 'bye'"}]),
            node("end", "end", outputs={"last": "{{ask.text}}"}),
        ],
        [
            edge("start", "ask"),
            edge("ask", "think"),
            edge("think", "say"),
            edge("say", "bye"),
            edge("bye", "end", "stop"),
            edge("bye", "ask", "else"),
        ],
    )


async def test_chat_turns_drive_one_run(fapp, fchannel):
    alice = await new_user(fchannel, "chat-alice")
    flow = await create_flow(alice, "dialog", dialog())
    service = fapp.servicers["FlowService"]
    token = principal.bind(principal.Principal(alice.user_id, principal.ROLE_USER))
    try:
        seen = (await service.get_flow(flow.id)).graph
        assert [n.id for n in seen.nodes][0] == "start"

        async def turn(text: str, **kw) -> list:
            return [
                m
                async for m in service.run_for_chat(
                    flow_id=flow.id, session_id="01SESSION0000000000000000A", question=text, **kw
                )
            ]

        first = await turn("hello")
        assert kinds(first)[0] == "run_started" and kinds(first)[-1] == "input_required"
        assert "".join(m.event.token.text for m in first if m.event.HasField("token")) == "You said HELLO"
        run_id = first[0].run_id
        second = await turn("again")
        assert {m.run_id for m in second} == {run_id} and second[0].seq == first[-1].seq + 1
        assert "".join(m.event.token.text for m in second if m.event.HasField("token")) == "You said AGAIN"
        assert kinds(second)[-1] == "input_required"
        last = await turn("bye")
        assert kinds(last)[-1] == "run_finished" and dict(last[-1].event.run_finished.outputs) == {"last": "bye"}
        # The next message starts a new run.
        fresh = await turn("hi there")
        assert fresh[0].run_id != run_id and kinds(fresh)[-1] == "input_required"

        # Closing a turn early (a stopped chat turn) stops its run.
        stream = service.run_for_chat(flow_id=flow.id, session_id="01SESSION0000000000000000A", question="x")
        async for message in stream:
            if message.event.HasField("node_finished"):
                break
        await stream.aclose()
        assert message.run_id == fresh[0].run_id  # the turn answered the waiting run
        for _ in range(100):
            if (await service.engine.get_row(message.run_id)).status == "stopped":
                break
            await asyncio.sleep(0.02)
        assert (await service.engine.get_row(message.run_id)).status == "stopped"
    finally:
        principal.bind_reset(token)
