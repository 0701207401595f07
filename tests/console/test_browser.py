"""The web console in a real browser against a real server: Debian's chromium driven by playwright-core.

Each scenario is a node script (chat.mjs, knowledge.mjs, flow.mjs, proxy.mjs) that prints its observations as
one JSON line; this test then checks them against what the server stored. Screenshots of every step go to
test-artifacts/console/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONSOLE = ROOT / "console"
DIST = CONSOLE / "dist"
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = Path("/usr/bin/chromium")
NODE = shutil.which("node")
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or NODE is None,
    reason="the browser tests need Debian's chromium at /usr/bin/chromium and node on PATH",
)

# The flow the run panel (and then a chat) is tried on: it pauses for a form, then ends with a sentence. Runs
# name someone with the `who` input; chats with the question (the `question` variable).
FLOW = {
    "name": "Browser test flow",
    "graph": {
        "nodes": [
            {"id": "start", "type": "NODE_TYPE_START",
             "params": {"variables": [{"name": "who", "type": "text"}, {"name": "question", "type": "text"}]}},
            {"id": "ask", "type": "NODE_TYPE_INPUT", "name": "Ask",
             "params": {"mode": "form", "prompt": "Age of {{who}}{{question}}?",
                        "fields": [{"name": "age", "type": "number", "required": True}]}},
            {"id": "p", "type": "NODE_TYPE_PROMPT", "params": {"template": "{{who}}{{question}} is {{ask.age}}"}},
            {"id": "end", "type": "NODE_TYPE_END", "params": {"outputs": {"text": "{{p.text}}"}}},
        ],
        "edges": [{"id": "e1", "source": "start", "target": "ask"}, {"id": "e2", "source": "ask", "target": "p"},
                  {"id": "e3", "source": "p", "target": "end"}],
    },
}


def build_console() -> None:
    """`make console` when the console was never built; a rebuild when its sources are newer than dist/."""
    index = DIST / "index.html"
    if not (CONSOLE / "node_modules" / "playwright-core").is_dir() or not index.is_file():
        subprocess.run(["make", "console"], cwd=ROOT, check=True, timeout=900)
        return
    built = index.stat().st_mtime
    sources = [p for p in (CONSOLE / "src").rglob("*") if p.is_file()] + [CONSOLE / "build.mjs"]
    if any(p.stat().st_mtime > built for p in sources):
        subprocess.run(["npm", "run", "--silent", "build"], cwd=CONSOLE, check=True, timeout=300)


def scenario(name: str, base_url: str, timeout: float = 150, **env: str) -> dict:
    """Runs tests/console/<name>.mjs; returns its JSON report (ok, result, error, consoleErrors)."""
    proc = subprocess.run(
        [NODE, str(HERE / f"{name}.mjs")],
        env={**os.environ, "BASE_URL": base_url, "ADMIN_KEY": ADMIN_KEY, "ARTIFACTS": str(ARTIFACTS),
             "CONSOLE_DIR": str(CONSOLE), **env},
        capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", "result": {}}
    report = json.loads(lines[-1])
    if proc.stderr.strip():
        report["stderr"] = proc.stderr[-2000:]
    return report


def messages_by_id(http: httpx.Client, session_id: str) -> dict[str, dict]:
    r = http.get(f"/v1/sessions/{session_id}/messages", params={"page_size": 500})
    r.raise_for_status()
    return {m["id"]: m for m in r.json()["messages"]}


def test_console_in_a_browser(server_factory):
    build_console()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proxy_port = free_port()
    server = server_factory(env={"TYPECASE_CONSOLE_DIR": str(DIST), "TYPECASE_PROXY_ENABLED": "true",
                                 "TYPECASE_PROXY_PORT": str(proxy_port),
                                 # Two passages keep the grounded chat's prompt short for the small local model.
                                 "TYPECASE_CHAT_KB_TOP_K": "2"})
    # The proxy forwards to this same server's OpenAI-compatible API, so its traffic needs no network; it spends
    # the admin key there, so its clients need a proxy access key (created below).
    server.env["TYPECASE_PROXY_TARGET_BASE_URL"] = f"{server.http_url}/openai"
    server.env["TYPECASE_PROXY_UPSTREAM_API_KEY"] = ADMIN_KEY
    server.start()
    server.wait_ready()
    http = httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30)
    flow = http.post("/v1/flows", json=FLOW)
    assert flow.status_code == 200, flow.text
    flow_id = flow.json()["flow"]["id"]

    failures: list[str] = []
    timings: dict[str, object] = {}

    def check(condition: bool, message: str) -> None:
        if not condition:
            failures.append(message)

    def run(name: str, expected_errors: tuple[str, ...] = ("401 (Unauthorized)",), **env: str) -> dict:
        started = time.monotonic()
        report = scenario(name, server.http_url, **env)
        timings[name] = round(time.monotonic() - started, 1)
        # The browser logs every refused request; the scenarios provoke some on purpose (a wrong key, ...).
        unexpected = [e for e in report.get("consoleErrors", []) if not any(x in e for x in expected_errors)]
        check(report["ok"], f"{name}: {report.get('error')}\n{report.get('stderr', '')}")
        check(not unexpected, f"{name}: errors in the browser console: {unexpected}")
        return report.get("result", {})

    # Chat: streamed tokens, a reload mid-answer, a stop. What the page showed must be what the server stored.
    chat = run("chat")
    timings["chat steps (ms from start)"] = chat.get("timings")
    if chat.get("sessionId"):
        stored = messages_by_id(http, chat["sessionId"])
        streamed = chat.get("streamed", {})
        if streamed:
            answer = stored[streamed["answerId"]]
            check(answer["content"] == streamed["text"], f"streamed answer shown {streamed['text']!r}, stored {answer['content']!r}")
        reload = chat.get("reload", {})
        if reload:
            answer = stored[reload["answerId"]]
            check(answer["status"] == "MESSAGE_STATUS_COMPLETE", f"reloaded answer status {answer['status']}")
            check(answer["content"] == reload["final"],
                  f"after the reload the page showed {reload['final']!r}, the server stored {answer['content']!r}")
            # Re-attached from the saved position, not by replaying the whole turn.
            resumed_from = [int((r.get("lastEventId") or 0)) or int(httpx.URL(r["url"]).params.get("after_seq", 0))
                            for r in reload["eventRequests"]]
            check(any(seq > 0 for seq in resumed_from), f"StreamTurnEvents resumed after a seq: {reload['eventRequests']}")
        stop = chat.get("stop", {})
        if stop:
            answer = messages_by_id(http, chat["stopSessionId"])[stop["answerId"]]
            check(answer["status"] == "MESSAGE_STATUS_STOPPED", f"stopped answer status {answer['status']}")
            check(answer["finish_reason"] == "FINISH_REASON_CANCELLED", f"stopped answer {answer['finish_reason']}")
            check(answer["content"] == stop["text"], f"stopped answer shown {stop['text']!r}, stored {answer['content']!r}")
            check(answer["usage"]["completion_tokens"] < 400, "the stop ended the answer before max tokens")

    if chat.get("deletedSessionId"):
        gone = http.get(f"/v1/sessions/{chat['deletedSessionId']}")
        check(gone.status_code == 404, f"the deleted chat is gone: {gone.status_code}")

    # Knowledge: the uploaded file is stored, processed and found.
    kb = run("knowledge")
    timings["knowledge steps (ms from start)"] = kb.get("timings")
    if kb.get("kbId"):
        files = http.get(f"/v1/knowledge-bases/{kb['kbId']}/files").json()["files"]
        check(len(files) == 1 and files[0]["status"] == "FILE_STATUS_DONE", f"knowledge files: {files}")
        check(files and files[0]["chunk_count"] == kb.get("chunks"), f"chunks shown {kb.get('chunks')}, stored {files}")
        check(files and int(files[0]["size_bytes"]) == kb.get("fileBytes"), "the whole file was uploaded")
    if kb.get("groundedSessionId"):
        session = http.get(f"/v1/sessions/{kb['groundedSessionId']}").json()["session"]
        check(session["kb_ids"] == [kb["kbId"]], f"the grounded chat's knowledge bases: {session['kb_ids']}")
        answer = list(messages_by_id(http, kb["groundedSessionId"]).values())[-1]
        check(len(answer["citations"]) == len(kb.get("citations", [])), f"citations stored {answer['citations']}")

    # Flow: the run started in the browser paused for input and finished with the form's answer.
    flow_report = run("flow", FLOW_ID=flow_id)
    if flow_report.get("outputs"):
        runs = http.get(f"/v1/flows/{flow_id}/runs").json()["runs"]
        check(len(runs) == 2 and all(r["status"] == "RUN_STATUS_FINISHED" for r in runs), f"runs: {runs}")
        check(runs and runs[-1]["outputs"] == {"text": "Ada is 36"}, f"the run panel's run: {runs}")
    if flow_report.get("chatSessionId"):
        stored = list(messages_by_id(http, flow_report["chatSessionId"]).values())
        check(stored[-1]["content"] == flow_report.get("chatAnswer") == "Grace is 36", f"flow chat: {stored}")
        check(http.get(f"/v1/flows/{flow_id}").json()["flow"]["status"] == "FLOW_STATUS_ONLINE", "published")

    # Proxy: the numbers the page showed follow the server's statistics.
    access = http.post("/v1/api-keys", json={"name": "console proxy", "scopes": ["proxy"]})
    assert access.status_code == 200, access.text
    proxy = run("proxy", PROXY_URL=f"http://127.0.0.1:{proxy_port}", PROXY_KEY=access.json()["secret"])
    if proxy.get("requestsLater"):
        stats = http.get("/v1/admin/stats").json()
        check(int(stats["total_requests"]) >= proxy["requestsLater"] > proxy["requestsFirst"], f"stats {stats}")

    # Username and password: tokens kept and refreshed (the refresh token rotates), non-admin errors, sign-out.
    user = http.post("/v1/users", json={"username": "ada", "password": "correct-horse-battery",
                                        "display_name": "Ada Lovelace", "role": "USER_ROLE_USER"})
    assert user.status_code == 200, user.text
    login = run("password", expected_errors=("401 (Unauthorized)", "403 (Forbidden)"),
                USERNAME_="ada", PASSWORD_="correct-horse-battery")
    if login.get("firstRefreshToken"):
        reused = httpx.post(f"{server.http_url}/v1/auth:refresh", json={"refresh_token": login["firstRefreshToken"]})
        check(reused.status_code == 401, f"the console's first refresh token was spent: {reused.status_code}")

    http.close()
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
    assert not failures, "\n\n".join(failures) + f"\n\nseconds per scenario: {timings}"


def test_console_typechecks():
    """tsc over the console against the SDK's declarations: a renamed RPC or field fails here, not in a browser."""
    build_console()
    proc = subprocess.run(["npm", "run", "--silent", "check"], cwd=CONSOLE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def start_console_server(server_factory, **env: str):
    build_console()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = server_factory(env={"TYPECASE_CONSOLE_DIR": str(DIST), **env})
    server.start()
    server.wait_ready()
    return server


def test_chat_markdown_is_highlighted_and_payloads_are_inert(server_factory):
    """Stored answers: a code block renders highlighted and copies; <img onerror>, javascript: links, <script>,
    <svg onload> and an image URL execute nothing (no dialog, no request). A live chat sends its own temperature
    and max tokens, and its title appears without a reload."""
    server = start_console_server(server_factory)
    report = scenario("markdown", server.http_url)
    result = report.get("result", {})
    unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
    assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
    assert not unexpected, f"errors in the browser console: {unexpected}"
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        session = http.get(f"/v1/sessions/{result['newSessionId']}").json()["session"]
        assert session["title"] == result["title"], f"shown {result['title']!r}, stored {session['title']!r}"
    assert result["dialogs"] == [] and result["canaries"] == []


def test_a_flow_built_with_the_mouse_is_saved_as_drawn_and_runs(server_factory):
    """editor.mjs drags five nodes onto the canvas, connects them (a condition's case and else handles), fills
    their generated forms, saves, publishes and runs both branches. The saved graph must be what was drawn."""
    server = start_console_server(server_factory)
    report = scenario("editor", server.http_url)
    result = report.get("result", {})
    unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
    assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
    assert not unexpected, f"errors in the browser console: {unexpected}"

    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        types = http.get("/v1/node-types").json()["node_types"]
        assert result["palette"] == [t["kind"] for t in types], "the palette offers every node type the server runs"
        flow = http.get(f"/v1/flows/{result['flowId']}").json()["flow"]
        runs = http.get(f"/v1/flows/{result['flowId']}/runs").json()["runs"]
        versions = http.get(f"/v1/flows/{result['flowId']}/versions").json()["versions"]
    current = next(v for v in versions if v["is_current"])
    assert current["name"] == "v2" and current["id"] == flow["current_version_id"], versions
    assert flow["status"] == "FLOW_STATUS_ONLINE"
    saved = flow["graph"]
    by_id = {n["id"]: n for n in saved["nodes"]}
    # The graph the test drew, field by field.
    assert {i: n["type"] for i, n in by_id.items()} == {
        "start": "NODE_TYPE_START", "condition": "NODE_TYPE_CONDITION", "prompt": "NODE_TYPE_PROMPT",
        "end": "NODE_TYPE_END", "end_2": "NODE_TYPE_END"}
    assert by_id["condition"]["params"]["cases"] == [
        {"handle": "tea", "logic": "and", "conditions": [{"left": "{{question}}", "op": "contains", "right": "tea"}]}]
    assert by_id["prompt"]["params"] == {"template": "Brewing: {{question}}"}
    assert by_id["end"]["params"] == {"outputs": {"text": "{{prompt.text}}"}}
    assert by_id["end_2"]["params"] == {"outputs": {"text": "No tea today"}} and by_id["end_2"]["name"] == "No tea"
    assert by_id["start"]["params"]["variables"][0]["name"] == "question"
    assert sorted((e["source"], e["source_handle"], e["target"]) for e in saved["edges"]) == [
        ("condition", "else", "end_2"), ("condition", "tea", "prompt"), ("prompt", "", "end"),
        ("start", "", "condition")]
    # ... and the same nodes, names, positions and edges as the canvas showed.
    drawn = result["drawn"]
    assert {n["id"]: (n["x"], n["y"], n["name"]) for n in drawn["nodes"]} == {
        n["id"]: (round(n["position"]["x"]), round(n["position"]["y"]), n["name"]) for n in saved["nodes"]}
    assert sorted(drawn["edges"]) == sorted(e["id"] for e in saved["edges"])
    # Both runs were real runs of the saved version; then the comparison ran v2 and v3 once each.
    assert sorted(r["outputs"]["text"] for r in runs) == [
        "Brewing: green tea please", "Brewing: mint tea", "No tea today", "Pouring: mint tea"]
    assert result["versions"] == ["v1", "v2", "v3"] or sorted(result["versions"]) == ["v1", "v2", "v3"]


# The console's budget on loopback from a fresh profile (the server sends the files uncompressed): what the first
# page fetches (HTML, entry JS, its static chunks, CSS), the time until the sign-in form is usable, and the flow
# editor chunk, fetched only when a flow is opened. Measured here on 2 shared cores: ~517 KiB, ~0.7-0.9 s.
FIRST_LOAD_BUDGET_BYTES = 600 * 1024
FIRST_LOAD_BUDGET_MS = 2500
EDITOR_CHUNK_BUDGET_BYTES = 300 * 1024


def test_bundle_size_and_first_load_time_stay_within_budget(server_factory):
    server = start_console_server(server_factory)
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        flow = http.post("/v1/flows", json=FLOW)
        assert flow.status_code == 200, flow.text
        flow_id = flow.json()["flow"]["id"]
    report = scenario("firstload", server.http_url, FLOW_ID=flow_id)
    assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
    r = report["result"]
    figures = {
        "first load KiB": round(r["firstLoadBytes"] / 1024, 1), "budget KiB": FIRST_LOAD_BUDGET_BYTES // 1024,
        "sign-in usable ms": r["signInReadyMs"], "load event ms": r["loadMs"], "budget ms": FIRST_LOAD_BUDGET_MS,
        "chat shown after sign-in ms": r["chatShownMs"],
        "editor chunk KiB": round(r["editorChunkBytes"] / 1024, 1),
        "editor budget KiB": EDITOR_CHUNK_BUDGET_BYTES // 1024,
        "editor shown ms": r["editorShownMs"],
        "files": {a["path"].rsplit("/", 1)[-1]: a["bytes"] for a in r["firstLoadAssets"]},
    }
    print("console first load:", json.dumps(figures, indent=1))
    (ARTIFACTS / "first-load.json").write_text(json.dumps(figures, indent=1))
    assert r["firstLoadBytes"] <= FIRST_LOAD_BUDGET_BYTES, figures
    assert r["signInReadyMs"] <= FIRST_LOAD_BUDGET_MS, figures
    assert 0 < r["editorChunkBytes"] <= EDITOR_CHUNK_BUDGET_BYTES, figures
    assert not any("editor" in a["path"] for a in r["firstLoadAssets"]), "the editor is not part of the first load"


def test_a_provider_added_on_the_models_page_answers_a_chat(server_factory):
    """models.mjs adds an OpenAI-compatible provider (a fake upstream speaking the wire format) and a model,
    tests it, makes it the default chat model and chats through it."""
    from tests.llm.fake_upstream import FakeUpstream

    upstream = FakeUpstream().start()
    try:
        server = start_console_server(server_factory)
        report = scenario("models", server.http_url, FAKE_URL=upstream.base_url, FAKE_KEY="sk-console-test-0123456789")
        result = report.get("result", {})
        unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
        assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
        assert not unexpected, f"errors in the browser console: {unexpected}"
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
            model = next(m for m in http.get("/v1/models").json()["models"] if m["name"] == "fake-gpt")
            defaults = http.get("/v1/llm/defaults").json()["defaults"]
            answer = list(messages_by_id(http, result["sessionId"]).values())[-1]
        assert model["upstream_name"] == "gpt-fake-1" and model["online"] is True
        assert model["access"] == "MODEL_ACCESS_RESTRICTED" and result["restrictStatus"] == 200
        assert result["shareLevels"] == ["use"]
        assert defaults["chat_model_id"] == model["id"]
        # The test and the chat reached the upstream, with the key typed into the form and the upstream name.
        chats = [s for s in upstream.seen if s.path.endswith("/chat/completions")]
        assert len(chats) >= 2, [s.path for s in upstream.seen]
        assert all(s.headers.get("authorization") == "Bearer sk-console-test-0123456789" for s in chats)
        assert all(s.body["model"] == "gpt-fake-1" for s in chats)
        assert answer["content"] == result["answer"] == "tok0 tok1 tok2 tok3 tok4 ", (answer, result)
        assert "fake-gpt" in result["header"]
    finally:
        upstream.stop()


def test_chat_pages_sessions_regenerates_edits_and_takes_feedback(server_factory):
    """chatactions.mjs against a fake OpenAI upstream: more chats than a page load as the list scrolls; Regenerate
    and Edit replace the last turn; like, dislike with a comment and copy are stored on the answer."""
    from tests.llm.fake_upstream import FakeUpstream

    upstream = FakeUpstream().start()
    try:
        server = start_console_server(server_factory)
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
            provider = http.post("/v1/providers", json={"name": "fake", "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
                                                        "base_url": f"{upstream.base_url}/v1", "api_key": "sk-x"})
            assert provider.status_code == 200, provider.text
            model = http.post("/v1/models", json={"provider_id": provider.json()["provider"]["id"], "name": "fake-gpt",
                                                  "type": "MODEL_TYPE_LLM", "online": True})
            assert model.status_code == 200, model.text
            model_id = model.json()["model"]["id"]
            total = 121  # two full pages of the console's 50 and a partial one
            for i in range(total - 1):
                http.post("/v1/sessions", json={"model_id": model_id, "title": f"old chat {i}"}).raise_for_status()
            session = http.post("/v1/sessions", json={"model_id": model_id}).json()["session"]
            report = scenario("chatactions", server.http_url, SESSION_ID=session["id"], TOTAL_SESSIONS=str(total))
            result = report.get("result", {})
            unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
            assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
            assert not unexpected, f"errors in the browser console: {unexpected}"
            stored = list(messages_by_id(http, session["id"]).values())
        assert [(m["category"], m["content"]) for m in stored] == [
            ("MESSAGE_CATEGORY_QUESTION", "edited question"), ("MESSAGE_CATEGORY_ANSWER", "tok0 tok1 tok2 tok3 tok4 ")]
        answer = stored[1]
        assert answer["id"] == result["finalAnswerId"]
        assert answer["rating"] == "MESSAGE_RATING_DISLIKE" and answer["feedback_comment"] == "too short"
        assert answer["copied_count"] == 1 and result["clipboard"] == answer["content"]
        # Three questions reached the upstream: the first, its regeneration, the edited one.
        asked = [s.body["messages"][-1]["content"] for s in upstream.seen if s.path.endswith("/chat/completions")]
        assert asked == ["first question", "first question", "edited question"], asked
    finally:
        upstream.stop()


def test_access_page_creates_a_user_and_a_key_shown_once_then_revoked_and_audited(server_factory):
    server = start_console_server(server_factory)
    report = scenario("access", server.http_url)
    result = report.get("result", {})
    # The scenario's own request with the revoked key is refused on purpose (outside the page: not in its console).
    unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
    assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
    assert not unexpected, f"errors in the browser console: {unexpected}"
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        users = {u["username"]: u for u in http.get("/v1/users").json()["users"]}
        keys = http.get("/v1/api-keys", params={"show_revoked": True,
                                                "owner_id": users["grace"]["id"]}).json()["api_keys"]
        audit = http.get("/v1/admin/audit", params={"action": "api_key.revoke"}).json()["events"]
        created = http.get("/v1/admin/audit", params={"action": "api_key.create", "page_size": 500}).json()["events"]
    key = next(k for k in keys if k["name"] == "grace's laptop")
    assert key["owner_id"] == users["grace"]["id"] and key["revoked"] is True
    assert result["secret"].startswith(key["prefix"])
    assert [e["resource_id"] for e in audit] == [key["id"]] and result["auditActions"] == ["api_key.revoke"]
    # A double click on "Older events" appended the second page once.
    assert result["createRows"] == len(created) == 51, (result["createRows"], len(created))


def test_server_page_changes_a_setting_and_lists_errors(server_factory):
    server = start_console_server(server_factory)
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        entries = http.get("/v1/admin/config").json()["entries"]
        entry = next(e for e in entries if e["editable"] and e["type"] == "CONFIG_VALUE_TYPE_NUMBER"
                     and not e["requires_restart"] and not e["secret"])
        new_value = str(int(float(entry["value"] or 0)) + 1)
        # A request error for the list: an unknown model through the OpenAI-compatible API.
        bad = http.post("/openai/v1/chat/completions", json={"model": "no-such-model", "messages": [
            {"role": "user", "content": "hi"}]})
        assert bad.status_code >= 400
        recorded = http.get("/v1/admin/errors").json()
        report = scenario("server", server.http_url, CONFIG_KEY=entry["key"], CONFIG_VALUE=new_value)
        result = report.get("result", {})
        assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
        stored = next(e for e in http.get("/v1/admin/config").json()["entries"] if e["key"] == entry["key"])
    assert float(stored["value"]) == float(new_value) and float(result["after"]) == float(new_value), (stored, result)
    assert stored["source"] == "CONFIG_SOURCE_RUNTIME"
    assert result["errorRows"] == min(len(recorded["errors"]), 50), (result, recorded)
