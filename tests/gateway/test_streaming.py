"""Server streams: NDJSON, SSE, WebSocket, raw HttpBody; cancellation; keep-alives. Both targets."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from support import Harness, serve

from typecase.server.gateway import jsonmap


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def sse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        ev: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                ev.setdefault("comment", line)
                continue
            key, _, value = line.partition(": ")
            ev[key] = value
        events.append(ev)
    return events


async def test_ndjson_stream_equals_grpc(gw):
    r = await gw.client.get("/v1/shelves/s1/books/b1:watch", params={"count": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(r.text)
    direct = [
        jsonmap.to_json(m)
        async for m in gw.streams.WatchBook(gw.pb.pb2.WatchBookRequest(name="shelves/s1/books/b1", count=3))
    ]
    assert lines == [{"result": d} for d in direct]
    assert [line["result"]["seq"] for line in lines] == ["1", "2", "3"]


async def test_ndjson_error_after_messages(gw):
    r = await gw.client.get(
        "/v1/shelves/s1/books/b1:watch", params={"count": 5, "fail_code": "DATA_LOSS", "fail_after": 2}
    )
    assert r.status_code == 200
    lines = ndjson(r.text)
    assert len(lines) == 3 and "result" in lines[1]
    assert lines[-1] == {"error": {"code": 15, "message": "failed after 2", "details": []}}


async def test_stream_error_before_first_message_is_an_http_error(gw):
    r = await gw.client.get(
        "/v1/shelves/s1/books/b1:watch", params={"count": 5, "fail_code": "NOT_FOUND", "fail_after": 0}
    )
    assert r.status_code == 404
    assert r.json() == {"code": 5, "message": "failed after 0", "details": []}


async def test_empty_stream(gw):
    r = await gw.client.get("/v1/shelves/s1/books/b1:watch", params={"count": 0})
    assert r.status_code == 200 and r.text == ""


async def test_sse_stream(gw):
    r = await gw.client.get(
        "/v1/shelves/s1/books/b1:watch", params={"count": 2}, headers={"Accept": "text/event-stream"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    events = sse_events(r.text)
    assert [e["id"] for e in events] == ["1", "2"]
    assert json.loads(events[0]["data"])["kind"] == "update"


async def test_sse_error_event(gw):
    r = await gw.client.get(
        "/v1/shelves/s1/books/b1:watch",
        params={"count": 3, "fail_code": "INTERNAL", "fail_after": 1},
        headers={"Accept": "text/event-stream"},
    )
    events = sse_events(r.text)
    assert events[-1]["event"] == "error"
    assert json.loads(events[-1]["data"]) == {"code": 13, "message": "failed after 1", "details": []}


async def test_last_event_id_resumes(gw):
    r = await gw.client.get(
        "/v1/shelves/s1/books/b1:watch",
        params={"count": 2},
        headers={"Accept": "text/event-stream", "Last-Event-ID": "41"},
    )
    assert [e["id"] for e in sse_events(r.text)] == ["42", "43"]
    # an explicit after_seq wins over Last-Event-ID
    r = await gw.client.get(
        "/v1/shelves/s1/books/b1:watch",
        params={"count": 1, "after_seq": 7},
        headers={"Accept": "text/event-stream", "Last-Event-ID": "41"},
    )
    assert [e["id"] for e in sse_events(r.text)] == ["8"]


async def test_last_event_id_is_metadata(gw):
    r = await gw.client.get("/v1/inspect", headers={"Last-Event-ID": "abc"})
    assert {"key": "last-event-id", "value": "abc"} in r.json()["metadata"]


async def test_post_stream_with_body(gw):
    r = await gw.client.post("/v1/shelves/s1/books/b1:watchAll", json={"count": 2, "after_seq": "10", "name": "x"})
    assert [line["result"]["seq"] for line in ndjson(r.text)] == ["11", "12"]
    assert ndjson(r.text)[0]["result"]["book"]["name"] == "shelves/s1/books/b1"


async def test_context_write_stream(gw):
    r = await gw.client.get("/v1/events:write", params={"count": 3})
    assert [line["result"]["kind"] for line in ndjson(r.text)] == ["written"] * 3


async def test_raw_httpbody_stream(gw):
    r = await gw.client.get("/v1/raw:stream", params={"count": 3})
    assert r.headers["content-type"] == "text/plain" and r.text == "line 0\nline 1\nline 2\n"


# -- over a real server: flushing, cancellation, keep-alive, WebSocket -----------------------------


@pytest.fixture(params=["inprocess", "channel"])
async def live(request, pb):
    async with Harness(pb, request.param, sse_keepalive_seconds=0.2) as h, serve(h.app) as addr:
        h.addr = addr
        yield h


async def until_cancelled(live, token: str, timeout: float = 10) -> None:
    """Wait for the handler to record its cancellation. The bounds on how soon it came are loose on purpose: a
    loaded 2-core machine can hold up the event loop for seconds, and a handler that missed the cancellation
    would run on for many more."""
    deadline = time.monotonic() + timeout
    while token not in live.state.cancelled and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_stream_is_flushed_per_message(live):
    async with httpx.AsyncClient(base_url=f"http://{live.addr}") as client:
        async with client.stream("GET", "/v1/shelves/s1/books/b1:watch", params={"count": 3, "interval_ms": 3000}) as r:
            start = time.monotonic()
            first = await r.aiter_lines().__anext__()
            assert json.loads(first)["result"]["seq"] == "1"
            assert time.monotonic() - start < 3  # not held back until the next message, 3 s later


async def test_client_disconnect_cancels_handler_quickly(live):
    token = f"cancel-{live.mode}"
    async with httpx.AsyncClient(base_url=f"http://{live.addr}") as client:
        async with client.stream(
            "GET", "/v1/shelves/s1/books/b1:watch", params={"count": 1000, "interval_ms": 20, "token": token}
        ) as r:
            lines = r.aiter_lines()
            await lines.__anext__()
            await lines.__anext__()
            closed_at = time.monotonic()
    await until_cancelled(live, token)
    assert token in live.state.cancelled, "handler never saw the cancellation"
    assert live.state.cancelled[token] - closed_at < 5  # uncancelled, the stream would run 20 s
    if live.mode == "inprocess":
        assert live.state.context_cancelled[token] is True


async def test_unary_client_disconnect_cancels_handler(live):
    token = f"unary-{live.mode}"
    async with httpx.AsyncClient(base_url=f"http://{live.addr}") as client:
        task = asyncio.ensure_future(client.post("/v1/sleep", json={"millis": 5000, "token": token}))
        await asyncio.wait_for(live.state.event(token).wait(), 5)
        await asyncio.sleep(0.1)
        task.cancel()
        closed_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
    await until_cancelled(live, token)
    assert token in live.state.cancelled
    assert live.state.cancelled[token] - closed_at < 3  # uncancelled, the handler would sleep 5 s
    if live.mode == "inprocess":
        assert live.state.context_cancelled[token] is True
        assert token in live.state.done_callbacks


async def test_sse_keepalive(live):
    async with httpx.AsyncClient(base_url=f"http://{live.addr}") as client:
        async with client.stream(
            "GET",
            "/v1/shelves/s1/books/b1:watch",
            params={"count": 2, "interval_ms": 700},
            headers={"Accept": "text/event-stream"},
        ) as r:
            body = b""
            async for chunk in r.aiter_bytes():
                body += chunk
    text = body.decode()
    # 0.2 s of silence each (the harness's setting) in 700 ms gaps: one after another, never a burst of them
    assert 2 <= text.count(": keep-alive") <= 8, text
    assert [e["id"] for e in sse_events(text) if "id" in e] == ["1", "2"]


async def test_websocket_stream(live):
    url = f"ws://{live.addr}/v1/shelves/s1/books/b1:watch"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"count": 3, "name": "ignored", "after_seq": "5"}))
        frames = [json.loads(await ws.recv()) for _ in range(3)]
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1000
    assert [f["seq"] for f in frames] == ["6", "7", "8"]
    assert frames[0]["book"]["name"] == "shelves/s1/books/b1"  # the path wins


async def test_websocket_on_post_route(live):
    async with websockets.connect(f"ws://{live.addr}/v1/shelves/s1/books/b1:watchAll") as ws:
        await ws.send("{}")
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()


@pytest.mark.parametrize(
    "code, close_code",
    [
        ("PERMISSION_DENIED", 1008),
        ("UNAUTHENTICATED", 1008),
        ("INTERNAL", 1011),
        ("UNKNOWN", 1011),
        ("NOT_FOUND", 1000),
    ],
)
async def test_websocket_error_frame_and_close_code(live, code, close_code):
    async with websockets.connect(f"ws://{live.addr}/v1/shelves/s1/books/b1:watch") as ws:
        await ws.send(json.dumps({"count": 3, "fail_code": code, "fail_after": 1}))
        assert "seq" in json.loads(await ws.recv())
        error = json.loads(await ws.recv())
        assert error["error"]["message"] == "failed after 1"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == close_code


async def test_websocket_cancel_message(live):
    token = f"ws-cancel-{live.mode}"
    async with websockets.connect(f"ws://{live.addr}/v1/shelves/s1/books/b1:watch") as ws:
        await ws.send(json.dumps({"count": 1000, "interval_ms": 20, "token": token}))
        await ws.recv()
        await ws.send(json.dumps({"cancel": True}))
        sent_at = time.monotonic()
        frames = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frames.append(json.loads(await ws.recv()))
        assert frames[-1]["error"]["code"] == 1
    await until_cancelled(live, token)
    assert live.state.cancelled[token] - sent_at < 5  # uncancelled, the stream would run 20 s


async def test_websocket_close_cancels(live):
    token = f"ws-close-{live.mode}"
    async with websockets.connect(f"ws://{live.addr}/v1/shelves/s1/books/b1:watch") as ws:
        await ws.send(json.dumps({"count": 1000, "interval_ms": 20, "token": token}))
        await ws.recv()
    closed_at = time.monotonic()
    await until_cancelled(live, token)
    assert live.state.cancelled[token] - closed_at < 5  # uncancelled, the stream would run 20 s


async def test_websocket_bearer_subprotocol_and_access_token(live):
    async with websockets.connect(f"ws://{live.addr}/v1/inspect", subprotocols=["bearer", "tok-ws"]) as ws:
        assert ws.subprotocol == "bearer"
        await ws.send("{}")
        md = {e["key"]: e["value"] for e in json.loads(await ws.recv())["metadata"]}
        assert md["authorization"] == "Bearer tok-ws"
    async with websockets.connect(f"ws://{live.addr}/v1/inspect?access_token=tok-q") as ws:
        await ws.send("{}")
        md = {e["key"]: e["value"] for e in json.loads(await ws.recv())["metadata"]}
        assert md["authorization"] == "Bearer tok-q"


async def test_websocket_bad_first_frame(live):
    async with websockets.connect(f"ws://{live.addr}/v1/shelves/s1/books/b1:watch") as ws:
        await ws.send('{"count": "many"}')
        error = json.loads(await ws.recv())
        assert error["error"]["code"] == 3 and '"count"' in error["error"]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
