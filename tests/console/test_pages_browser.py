"""The console's tools, chunk editor and chat attachment pages in a real browser against a real server (and real
tool servers on loopback). Each scenario (tools.mjs, chunks.mjs, attachments.mjs) prints what the page showed; this
file checks it against what the server stored and what the tool servers received."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.console.test_browser import AUTH, CHROMIUM, NODE, scenario, start_console_server
from tests.tools.servers import start, stop

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or NODE is None,
    reason="the browser tests need Debian's chromium at /usr/bin/chromium and node on PATH",
)

SERVICE_KEY = "pets-key-for-the-console-7731"
MCP_TOKEN = "mcp-console-token-5150"


def checked(report: dict) -> dict:
    unexpected = [e for e in report.get("consoleErrors", []) if not any(
        s in e for s in ("401 (Unauthorized)", "400 (Bad Request)", "502 (Bad Gateway)", "500 (Internal Server Error)",
                         "409 (Conflict)", "404 (Not Found)", "504 (Gateway Timeout)"))]
    assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
    assert not unexpected, f"errors in the browser console: {unexpected}"
    return report.get("result", {})


def test_tools_page_imports_an_openapi_service_adds_an_mcp_server_and_tries_their_tools(server_factory):
    service, service_port = start("tests.tools.openapi_service", "{port}", SERVICE_KEY)
    mcp, mcp_port = start("tests.tools.mcp_server", "http", "{port}", MCP_TOKEN)
    try:
        # The test's tool servers listen on loopback, which the SSRF guard refuses unless allowed.
        server = start_console_server(server_factory, TYPECASE_FLOW_HTTP_ALLOWED_HOSTS='["127.0.0.1"]')
        result = checked(scenario("tools", server.http_url, OPENAPI_URL=f"http://127.0.0.1:{service_port}/openapi.json",
                                  SERVICE_KEY=SERVICE_KEY, MCP_URL=f"http://127.0.0.1:{mcp_port}/mcp",
                                  MCP_TOKEN=MCP_TOKEN))
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
            providers = http.get("/v1/tool-providers").json()["providers"]
            pets_service = httpx.get(f"http://127.0.0.1:{service_port}/api/pets", headers={"x-api-key": SERVICE_KEY}).json()
    finally:
        stop(service)
        stop(mcp)

    assert result["builtinCategories"].strip(), result
    assert result["currentTime"]["ok"], result["currentTime"]
    # Imported from the URL with the key: three operations, and the key reached the service.
    assert result["openapiTools"] == ["createPet", "getPet", "listPets"]
    pets = next(p for p in providers if p["name"] == "Pets")
    assert pets["id"] == result["openapiProviderId"] and pets["openapi"]["auth"]["credential_set"] is True
    assert SERVICE_KEY not in json.dumps(providers)
    assert result["getPet"]["ok"] and "Rex" in result["getPet"]["text"], result["getPet"]
    # The JSON-typed body argument reached the service as an object.
    assert result["createPet"]["ok"], result["createPet"]
    assert {"name": "Tom", "tag": "cat"}.items() <= next(p for p in pets_service if p["name"] == "Tom").items()
    # Errors: the reason and the upstream's message; a service echoing the key does not leak it to the page.
    assert result["missingPet"]["reason"] == "TOOL_FAILED" and "404" in result["missingPet"]["text"], result["missingPet"]
    assert result["echoKey"]["reason"] == "TOOL_FAILED" and SERVICE_KEY not in result["echoKey"]["text"]
    # MCP: integers from the form, the header masked, the tool's error surfaced; then deleted.
    assert result["add"]["ok"] and "42" in result["add"]["text"], result["add"]
    assert "Authorization: ****" in result["mcpHeaderShown"], result["mcpHeaderShown"]
    assert result["explode"]["reason"] == "TOOL_FAILED" and "the fuse blew" in result["explode"]["text"], result["explode"]
    assert "Calculator" not in result["providersAfterDelete"] and "Pets" in result["providersAfterDelete"]
    assert all(p["id"] != result["mcpProviderId"] for p in providers)


OLD_PHRASE = "ferry timetable is pinned beside the bakery door"
NEW_PHRASE = "zeppelin schedule is painted on the lighthouse wall"
ADDED_TEXT = "Hand-written note: the tide clock in the harbour office runs seven minutes fast."


def harbour_notes() -> str:
    """About 12 KiB of varied text (several chunks) with the phrase the test edits in the middle."""
    topics = ["tides", "gardens", "bridges", "libraries", "orchards", "railways", "markets", "observatories"]
    parts = ["# Harbour notes\n"]
    for i in range(30):
        t = topics[i % len(topics)]
        parts.append(f"## Section {i + 1}: {t}\n\nThe {t} of the harbour town change with the seasons. Visitors in "
                     f"section {i + 1} say the {t} are kept by volunteers who meet every {i % 6 + 1} weeks. Records "
                     f"from year {1900 + i} describe repairs, festivals and storms that closed the roads.\n")
        if i == 15:
            parts.append(f"\n## Travel\n\nThe {OLD_PHRASE}, and it changes every spring.\n")
    return "\n".join(parts)


def test_chunk_editor_edits_adds_deletes_and_a_citation_previews_its_file(server_factory):
    """chunks.mjs edits a chunk in the browser; keyword search then finds the new text and not the old. A chunk is
    added and one deleted; the file is previewed (a range request) and downloaded whole; a grounded answer's
    citation previews the file in place."""
    from tests.llm.fake_upstream import FakeUpstream

    upstream = FakeUpstream().start()
    try:
        server = start_console_server(server_factory)
        content = harbour_notes().encode()
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=60) as http:
            kb = http.post("/v1/knowledge-bases", json={"name": "Harbour"}).json()["knowledge_base"]
            r = http.post(f"/v1/knowledge-bases/{kb['id']}/files", files={"file": ("harbour-notes.txt", content, "text/plain")})
            assert r.status_code == 200, r.text
            file_id = r.json()["file"]["id"]
            deadline = time.monotonic() + 120
            while (f := http.get(f"/v1/files/{file_id}").json()["file"])["status"] != "FILE_STATUS_DONE":
                assert f["status"] != "FILE_STATUS_FAILED" and time.monotonic() < deadline, f
                time.sleep(0.3)
            chunks_before = f["chunk_count"]
            assert chunks_before >= 3, f
            provider = http.post("/v1/providers", json={"name": "fake", "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
                                                        "base_url": f"{upstream.base_url}/v1", "api_key": "sk-x"})
            model = http.post("/v1/models", json={"provider_id": provider.json()["provider"]["id"], "name": "fake-gpt",
                                                  "type": "MODEL_TYPE_LLM", "online": True}).json()["model"]
            session = http.post("/v1/sessions", json={"model_id": model["id"], "kb_ids": [kb["id"]]}).json()["session"]

            result = checked(scenario("chunks", server.http_url, KB_ID=kb["id"], FILE_NAME="harbour-notes.txt",
                                      SESSION_ID=session["id"], OLD_PHRASE=OLD_PHRASE, NEW_PHRASE=NEW_PHRASE,
                                      ADDED_TEXT=ADDED_TEXT))

            def chunks(**params) -> list[dict]:
                r = http.get(f"/v1/knowledge-bases/{kb['id']}/chunks", params={"file_id": file_id, "page_size": 500, **params})
                return r.json()["chunks"]

            edited = chunks(keyword=NEW_PHRASE)
            stored = chunks()
    finally:
        upstream.stop()

    assert result["fileId"] == file_id
    # The edit is stored, marked, and what search found; the old text is gone from the index.
    assert [c["index"] for c in edited] == [result["editedIndex"]] and edited[0]["edited"] is True, edited
    assert "edited" in result["editedBadge"]
    assert result["hitsNew"] and NEW_PHRASE in result["hitsNew"][0], result["hitsNew"]
    assert not any(OLD_PHRASE in h for h in result["hitsOld"]), result["hitsOld"]
    # One added (at the end), the first deleted: the count is unchanged, the page said so.
    assert len(stored) == chunks_before and all(c["index"] != 0 for c in stored), stored
    assert stored[-1]["text"] == ADDED_TEXT
    assert result["totalBefore"] == result["totalAfter"] == f"{chunks_before} chunks"
    # Preview through a range request, download whole.
    assert "range=bytes" in result["previewRequest"]
    assert result["previewText"] == content.decode()[:200]
    assert result["downloadName"] == "harbour-notes.txt" and result["downloadBytes"] == len(content)
    # The citation points at the file and previews it.
    assert result["citationFile"] == "harbour-notes.txt"
    assert result["citationLink"] == f"/knowledge/{kb['id']}/{file_id}"
    assert result["citationPreview"] == content.decode()[:200]


def png(width: int = 8, height: int = 6) -> bytes:
    """A real PNG (solid teal) without an imaging library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x00\x80\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_chat_attachments_are_picked_dropped_sent_and_shown(server_factory, tmp_path):
    """attachments.mjs attaches an image (Attach button) and drops a text file on the composer, then asks. The
    model received the image as an image part and the document's text before the question; the stored question
    lists both; the page showed the image as a thumbnail, and after a reload fetched it from the server."""
    import base64

    from tests.llm.fake_upstream import FakeUpstream

    image = png()
    (tmp_path / "dot.png").write_bytes(image)
    notes = "Boiler notes: the pressure valve was replaced on Tuesday by the night shift."
    upstream = FakeUpstream().start()
    try:
        server = start_console_server(server_factory)
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=60) as http:
            provider = http.post("/v1/providers", json={"name": "fake", "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
                                                        "base_url": f"{upstream.base_url}/v1", "api_key": "sk-x"})
            model = http.post("/v1/models", json={"provider_id": provider.json()["provider"]["id"], "name": "fake-vision",
                                                  "type": "MODEL_TYPE_LLM", "online": True,
                                                  "capabilities": {"vision": True}}).json()["model"]
            session = http.post("/v1/sessions", json={"model_id": model["id"]}).json()["session"]
            result = checked(scenario("attachments", server.http_url, SESSION_ID=session["id"],
                                      PNG_PATH=str(tmp_path / "dot.png"), NOTES_TEXT=notes))
            messages = http.get(f"/v1/sessions/{session['id']}/messages").json()["messages"]
    finally:
        upstream.stop()

    assert result["pending"] == ["dot.png", "notes.txt"] and result["pendingThumb"] == 8
    assert result["sent"] == [{"name": "dot.png", "type": "image/png"}, {"name": "notes.txt", "type": "text/plain"}]
    assert result["sentThumb"] == [8, 6]
    assert result["afterReload"] == ["dot.png", "notes.txt"]
    # After the reload the thumbnail is the stored image and the document downloads whole.
    assert result["reloadedThumb"] == [8, 6]
    assert result["downloadName"] == "notes.txt" and result["downloadText"] == notes
    question = next(m for m in messages if m["category"] == "MESSAGE_CATEGORY_QUESTION")
    assert [(a["name"], a["mime_type"], int(a["size_bytes"])) for a in question["attachments"]] == [
        ("dot.png", "image/png", len(image)), ("notes.txt", "text/plain", len(notes))]
    [asked] = [s.body for s in upstream.seen if s.path.endswith("/chat/completions")]
    parts = asked["messages"][-1]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    texts = " ".join(p["text"] for p in parts if p["type"] == "text")
    assert images == [f"data:image/png;base64,{base64.b64encode(image).decode()}"]
    assert 'Attached file "notes.txt"' in texts and notes in texts and "What is in the picture" in texts


def test_assistant_builder_creates_publishes_and_tries_an_assistant_with_tools(server_factory):
    """assistants.mjs builds an assistant with the form (an MCP tool and a built-in, a knowledge base, ...),
    publishes it and asks a suggested question in the try-it pane. A scripted OpenAI upstream calls both tools in
    parallel, then answers with their results; the pane and the chat page show the calls collapsed."""
    from tests.assistants.scripted import ScriptedUpstream

    mcp, mcp_port = start("tests.tools.mcp_server", "http", "{port}", MCP_TOKEN)
    upstream = ScriptedUpstream().start()
    try:
        server = start_console_server(server_factory, TYPECASE_FLOW_HTTP_ALLOWED_HOSTS='["127.0.0.1"]')
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=60) as http:
            provider = http.post("/v1/providers", json={"name": "fake", "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
                                                        "base_url": f"{upstream.base_url}/v1", "api_key": "sk-x"})
            model = http.post("/v1/models", json={"provider_id": provider.json()["provider"]["id"], "name": "fake-gpt",
                                                  "type": "MODEL_TYPE_LLM", "online": True}).json()["model"]
            tools = http.post("/v1/tool-providers", json={
                "name": "Calculator", "kind": "TOOL_PROVIDER_KIND_MCP", "headers": {"Authorization": f"Bearer {MCP_TOKEN}"},
                "mcp": {"url": f"http://127.0.0.1:{mcp_port}/mcp"}})
            assert tools.status_code == 200, tools.text
            add = next(t for t in http.get("/v1/tools", params={"provider_id": tools.json()["provider"]["id"]}).json()["tools"]
                       if t["name"] == "add")
            kb = http.post("/v1/knowledge-bases", json={"name": "Arithmetic notes"}).json()["knowledge_base"]
            upstream.program([{"name": "add", "arguments": {"a": 2, "b": 40}}, {"name": "current_time", "arguments": {}}],
                             "answer")
            result = checked(scenario("assistants", server.http_url, KB_NAME=kb["name"]))
            stored = http.get(f"/v1/assistants/{result['assistantId']}").json()["assistant"]
            session = http.get(f"/v1/sessions/{result['sessionId']}").json()["session"]
    finally:
        upstream.stop()
        stop(mcp)

    # What the form saved.
    assert stored["name"] == "Calculator helper" and stored["description"] == "Adds numbers, tells the time"
    assert stored["model_id"] == model["id"] and stored["instructions"] == "You add numbers as {{assistant_name}} for {{who}}."
    assert stored["variables"] == [{"name": "who", "description": "whom the numbers are for", "default_value": "Ada"}]
    assert sorted(stored["tool_ids"]) == sorted([add["id"], "builtin-current_time"])
    assert stored["kb_ids"] == [kb["id"]] and stored["knowledge_mode"] == "KNOWLEDGE_MODE_TOOL"
    assert stored["opening_message"] == "Hello! I add numbers." == result["opening"].strip()
    assert stored["suggested_questions"] == ["What is 2 + 40?", "What time is it?"]
    assert stored["max_steps"] == 4 and stored["tool_choice"] == "TOOL_CHOICE_MODE_REQUIRED"
    assert stored["status"] == "ASSISTANT_STATUS_ONLINE" and result["listBadge"] == "online"
    assert result["loadedTools"] == ["tool-add", "tool-current_time"], result["loadedTools"]
    # The try-it pane chatted with the assistant: its session, both tools called in parallel, the answer quoting them.
    assert session["kind"] == "SESSION_KIND_ASSISTANT" and session["assistant_id"] == result["assistantId"]
    first = next(s.body for s in upstream.seen if s.path.endswith("/chat/completions"))
    assert {t["function"]["name"] for t in first["tools"]} >= {"add", "current_time"}
    assert first["tool_choice"] == "required"
    assert first["messages"][0]["content"] == "You add numbers as Calculator helper for Ada."
    # The two calls ran in parallel: their order on the page is the order they ended in, either way.
    names = sorted((s["name"], s["status"]) for s in result["trySteps"])
    assert names == [("add", "succeeded"), ("current_time", "succeeded")], result["trySteps"]
    add_step = next(s for s in result["trySteps"] if s["name"] == "add")
    assert '"a": 2' in add_step["arguments"] and add_step["result"].strip() == "42"
    assert result["tryAnswer"].startswith("Answer: 42 | "), result["tryAnswer"]
    # The chat page shows the same calls, collapsed, and offers the published assistant.
    assert sorted((s["name"], s["status"]) for s in result["chatSteps"]) == names
    assert "Assistant: Calculator helper" in result["chatHeader"] and "Calculator helper" in result["talkTo"]
