"""Issue 24 item 6: an unknown JSON field is a 400 naming it on every surface (REST, NDJSON in and out, SSE,
WebSocket, /openai/v1), never silently dropped; an invalid enum value lists the accepted values."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

from tests.conftest import ADMIN_KEY

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "MESSAGE_ROLE_USER", "content": "Hello"}]


@pytest.fixture
async def http(running_app):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{running_app.http_port}", headers=AUTH, timeout=30
    ) as client:
        client.app = running_app
        yield client


def message(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return response.json()["message"]


async def test_rest_names_the_unknown_field_and_the_field_meant(http):
    # The OpenAI habit: a top-level max_tokens was dropped and the answer ran long.
    r = await http.post(f"/v1/models/{MODEL}:complete", json={"messages": HELLO, "max_tokens": 20})
    assert message(r) == (
        'unknown field "max_tokens" in typecase.v1.CompleteRequest (did you mean "config.max_tokens"?)'
    )
    # A typo was "at least one message is required".
    r = await http.post(f"/v1/models/{MODEL}:complete", json={"messagez": HELLO})
    assert message(r).startswith('unknown field "messagez"') and 'did you mean "messages"' in message(r)
    # Nested, several at once, and on a plain CRUD route.
    r = await http.post(f"/v1/models/{MODEL}:complete", json={"messages": [{**HELLO[0], "rol": "x"}]})
    assert message(r).startswith('unknown field "messages[0].rol" in typecase.v1.ChatMessage')
    r = await http.post("/v1/knowledge-bases", json={"name": "kb", "colour": "red", "size": 3})
    assert '"colour", "size"' in message(r)
    r = await http.post("/v1/knowledge-bases", json={"name": "kb-ok"})
    assert r.status_code == 200, r.text  # known fields, proto or JSON names, still pass


async def test_an_invalid_enum_value_lists_the_accepted_ones(http):
    r = await http.post(f"/v1/models/{MODEL}:complete", json={"messages": [{"role": "user", "content": "Hi"}]})
    text = message(r)
    assert '"messages[0].role"' in text and '"user"' in text
    assert "accepted: MESSAGE_ROLE_SYSTEM, MESSAGE_ROLE_USER, MESSAGE_ROLE_ASSISTANT, MESSAGE_ROLE_TOOL" in text


@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/event-stream"])
async def test_streamed_routes_refuse_before_streaming(http, accept):
    r = await http.post(
        f"/v1/models/{MODEL}:generate", json={"messages": HELLO, "max_tokens": 20}, headers={"accept": accept}
    )
    assert 'unknown field "max_tokens"' in message(r)


async def test_ndjson_request_messages_name_the_field_and_the_line(http):
    kb = (await http.post("/v1/knowledge-bases", json={"name": "uploads"})).json()["knowledge_base"]["id"]
    lines = json.dumps({"file_name": "a.txt", "tagz": ["x"]}) + "\n" + json.dumps({"chunk": "aGVsbG8="}) + "\n"
    r = await http.post(
        f"/v1/knowledge-bases/{kb}/files", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert 'unknown field "tagz"' in message(r) and 'did you mean "tags"' in message(r)
    files = await http.get(f"/v1/knowledge-bases/{kb}/files")
    assert files.json()["files"] == []  # nothing stored from a refused upload


async def test_websocket_first_frame_is_refused_in_band(http):
    url = f"ws://127.0.0.1:{http.app.http_port}/v1/models/{MODEL}:generate"
    async with websockets.connect(url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"messages": HELLO, "max_tokens": 20}))
        frames = [json.loads(frame) async for frame in ws]
    assert len(frames) == 1 and frames[0]["error"]["code"] == 3
    assert frames[0]["error"]["message"].startswith('unknown field "max_tokens"')
    assert "max_tokens" in ws.close_reason


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/openai/v1/chat/completions", {"model": MODEL, "messagez": [{"role": "user", "content": "Hi"}]}, "messagez"),
        (
            "/openai/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "Hi", "nme": "a"}]},
            "messages[0].nme",
        ),
        (
            "/openai/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}", "argz": 1}}
                        ],
                    }
                ],
            },
            "messages[0].tool_calls[0].function.argz",
        ),
        ("/openai/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "Hi", "dimension": 8}, "dimension"),
    ],
)
async def test_openai_surface_names_the_field_in_openai_error_shape(http, path, body, param):
    r = await http.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"]
