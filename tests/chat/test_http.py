"""The chat API as browsers use it, through the App's HTTP port: REST, NDJSON, SSE with Last-Event-ID resume,
and WebSocket."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.chat.fake_upstream import expected_answer


def auth(who) -> dict[str, str]:
    return {"authorization": dict(who.md)["authorization"]}


@pytest.fixture
async def http(chat_app):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{chat_app.http_port}", timeout=10) as client:
        yield client


def error_reason(response: httpx.Response) -> str:
    body = response.json()
    return next((d.get("reason", "") for d in body.get("details", []) if "reason" in d), "")


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


def text_of(events) -> str:
    return "".join(e["event"]["token"]["text"] for e in events if e["event"].get("token") is not None)


async def test_rest_session_message_and_feedback_lifecycle(http, alice, bob, fake_model):
    h = auth(alice)
    created = await http.post("/v1/sessions", json={"title": "over http", "system_prompt": "Be kind."}, headers=h)
    assert created.status_code == 200, created.text
    session = created.json()["session"]
    sid = session["id"]
    assert session["kind"] == "SESSION_KIND_MODEL" and session["model_id"] == fake_model.id
    assert session["message_count"] == 0  # every field emitted

    added = await http.post(
        f"/v1/sessions/{sid}/messages",
        headers=h,
        json={"pairs": [{"question": "2+2?", "answer": "4"}, {"question": "3+3?", "answer": "6"}]},
    )
    assert added.status_code == 200, added.text
    ids = [m["id"] for m in added.json()["messages"]]
    listed = (await http.get(f"/v1/sessions/{sid}/messages", params={"page_size": 3}, headers=h)).json()
    assert [m["id"] for m in listed["messages"]] == ids[:3] and listed["next_page_token"]
    newest = (await http.get(f"/v1/sessions/{sid}/messages", params={"newest_first": "true"}, headers=h)).json()
    assert [m["id"] for m in newest["messages"]] == ids[::-1]

    renamed = await http.patch(f"/v1/sessions/{sid}", json={"title": "renamed"}, headers=h)
    assert renamed.status_code == 200, renamed.text
    renamed = renamed.json()["session"]
    assert renamed["title"] == "renamed" and renamed["system_prompt"] == "Be kind."  # the body is the mask

    edited = await http.patch(f"/v1/messages/{ids[1]}", json={"content": "four"}, headers=h)
    assert edited.status_code == 200 and edited.json()["message"]["content"] == "four"
    liked = await http.post(
        f"/v1/messages/{ids[1]}:feedback", json={"action": "FEEDBACK_ACTION_DISLIKE", "comment": "spell it"}, headers=h
    )
    assert liked.json()["message"]["rating"] == "MESSAGE_RATING_DISLIKE"
    await http.post(f"/v1/messages/{ids[3]}:feedback", json={"action": "FEEDBACK_ACTION_COPIED"}, headers=h)
    got = (await http.get(f"/v1/sessions/{sid}", headers=h)).json()["session"]
    assert (got["dislike_count"], got["copied_count"], got["message_count"]) == (1, 1, 4)

    copy = await http.post(f"/v1/sessions/{sid}:copy", json={"title": "copied"}, headers=h)
    assert copy.status_code == 200 and copy.json()["session"]["message_count"] == 4

    assert (await http.get(f"/v1/sessions/{sid}", headers=auth(bob))).status_code == 404
    assert (await http.delete(f"/v1/messages/{ids[0]}", headers=auth(bob))).status_code == 404
    bad = await http.post(f"/v1/messages/{ids[0]}:feedback", json={"action": "FEEDBACK_ACTION_LIKE"}, headers=h)
    assert bad.status_code == 400  # questions take no feedback

    assert (await http.delete(f"/v1/messages/{ids[0]}", headers=h)).status_code == 200
    assert (await http.delete(f"/v1/sessions/{sid}", headers=h)).status_code == 200
    gone = await http.get(f"/v1/sessions/{sid}", headers=h)
    assert gone.status_code == 404 and error_reason(gone) == "SESSION_DELETED"
    mine = (await http.get("/v1/sessions", headers=h)).json()
    assert [s["id"] for s in mine["sessions"]] == [copy.json()["session"]["id"]] and mine["total_size"] == 1
    assert (await http.get("/v1/sessions", headers={})).status_code == 401


async def test_ndjson_chat_stream(http, me, fake_model):
    h = auth(me)
    sid = (await http.post("/v1/sessions", json={}, headers=h)).json()["session"]["id"]
    async with http.stream("POST", f"/v1/sessions/{sid}:chat", json={"content": "[tokens=15] hi"}, headers=h) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in r.aiter_lines() if line]
    results = [line["result"] for line in lines]
    assert "started" in results[0]["event"] and "ended" in results[-1]["event"]
    assert [int(m["seq"]) for m in results] == list(range(1, len(results) + 1))
    assert text_of(results) == results[-1]["event"]["ended"]["answer"]["content"] == expected_answer(15)

    empty = await http.post(f"/v1/sessions/{sid}:chat", json={"content": "  "}, headers=h)
    # Refused before the turn starts: an ordinary HTTP error, not a stream.
    assert empty.status_code == 400, empty.text
    assert empty.json()["code"] == 3 and empty.json()["message"].startswith("content:")
    session_gone = await http.post("/v1/sessions/01JNOSUCHSESSION0000000000:chat", json={"content": "hi"}, headers=h)
    assert session_gone.status_code == 404


async def test_sse_drop_and_resume_with_last_event_id(http, me, fake_model):
    h = {**auth(me), "accept": "text/event-stream"}
    sid = (await http.post("/v1/sessions", json={}, headers=auth(me))).json()["session"]["id"]
    lines: list[str] = []
    async with http.stream(
        "POST", f"/v1/sessions/{sid}:chat", json={"content": "[tokens=80 delay=0.005] go"}, headers=h
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            lines.append(line)
            if len(sse_events(lines)) == 10:
                break  # the browser tab goes away mid-answer
    first = sse_events(lines)
    turn_id = first[0][1]["turn_id"]
    assert [seq for seq, _ in first] == list(range(1, 11))

    resumed: list[str] = []
    async with http.stream("GET", f"/v1/turns/{turn_id}/events", headers={**h, "last-event-id": "10"}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            resumed.append(line)
    rest = sse_events(resumed)
    assert rest[0][0] == 11 and "ended" in rest[-1][1]["event"]
    every = [e for _, e in first + rest]
    assert [int(e["seq"]) for e in every] == list(range(1, len(every) + 1))
    stored = every[-1]["event"]["ended"]["answer"]
    assert text_of(every) == stored["content"] == expected_answer(80)


async def test_websocket_chat_and_stop(http, chat_app, me, fake_model, upstream):
    sid = (await http.post("/v1/sessions", json={}, headers=auth(me))).json()["session"]["id"]
    url = f"ws://127.0.0.1:{chat_app.http_port}/v1/sessions/{sid}:chat"
    async with websockets.connect(url, additional_headers=auth(me)) as ws:
        await ws.send(json.dumps({"content": "[tokens=10] over a websocket"}))
        frames = [json.loads(frame) async for frame in ws]
        assert ws.close_code == 1000
    assert "started" in frames[0]["event"] and "ended" in frames[-1]["event"]
    assert text_of(frames) == expected_answer(10)

    async with websockets.connect(url, additional_headers=auth(me)) as ws:
        await ws.send(json.dumps({"content": "[tokens=5000 delay=0.01] a long one"}))
        started = json.loads(await ws.recv())
        turn_id = started["turn_id"]
        token = json.loads(await ws.recv())
        stop = await http.post(f"/v1/turns/{turn_id}:stop", json={}, headers=auth(me))
        assert stop.status_code == 200 and stop.json()["stopped"] is True
        frames = [started, token, *[json.loads(frame) async for frame in ws]]
        assert ws.close_code == 1000
    ended = frames[-1]["event"]["ended"]
    assert ended["finish_reason"] == "FINISH_REASON_CANCELLED"
    assert ended["answer"]["status"] == "MESSAGE_STATUS_STOPPED" and ended["answer"]["content"] == text_of(frames)
    assert upstream.closed_early >= 1 or await _eventually(lambda: upstream.closed_early >= 1)


async def _eventually(predicate, timeout: float = 1.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()
