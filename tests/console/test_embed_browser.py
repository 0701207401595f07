"""The embeddable chat page (issue 25, "publish as API") in Chromium: a site on another origin frames
/embed/assistants/<id>#key=<scoped key>; typing in the frame chats with the assistant (a fake upstream LLM) through
the public API. The key never appears in a request URL (it rides in the fragment, then in memory), and the page
carries the headers that let other sites frame it while keeping scripts and connections to its own origin."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster.api import register_model
from tests.conftest import ADMIN_KEY
from tests.console.test_browser import CHROMIUM, NODE, scenario

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or NODE is None, reason="needs Debian's chromium and node")
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def host_origin(tmp_path) -> Iterator[str]:
    (tmp_path / "index.html").write_text("<!doctype html><title>a company site</title><p>Ask us:</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_site_frames_the_chat_page_and_chats_with_a_published_assistant(server_factory, host_origin):
    from tests.llm.fake_upstream import FakeUpstream

    upstream = FakeUpstream().start()
    try:
        server = server_factory()
        server.start()
        server.wait_ready()
        base = server.http_url
        model = register_model(base, f"{upstream.base_url}/v1", "embed-llm")
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
            assistant = http.post("/v1/assistants", json={"name": "Site helper", "model_id": model["id"]}).json()
            assistant = assistant["assistant"]
            made = http.post("/v1/api-keys", json={
                "name": "site widget", "resources": [f"assistant/{assistant['id']}"], "actions": ["chat"]})
            assert made.status_code == 200, made.text
            key = made.json()["secret"]

            page = httpx.get(f"{base}/embed/assistants/{assistant['id']}")
            assert page.status_code == 200 and '<script src="/embed/chat.js">' in page.text
            policy = page.headers["content-security-policy"]
            assert "frame-ancestors *" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
            assert "x-frame-options" not in page.headers and page.headers["referrer-policy"] == "no-referrer"
            assert httpx.get(f"{base}/embed/chat.js").headers["content-type"].startswith("text/javascript")
            assert httpx.get(f"{base}/embed/../config.py").status_code == 404

            report = scenario("embed", base, HOST_PAGE=f"{host_origin}/index.html", ASSISTANT_ID=assistant["id"],
                              KEY=key)
            assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
            result = report["result"]
            assert result["hostOrigin"] == host_origin and result["user"] == "Hello from the site"
            assert result["status"] == "" and result["answer"], result
            assert result["keyInRequests"] == 0 and "key=" not in result["frameUrl"], result
            # (the host site's own missing favicon is the only allowed noise: "File not found" is http.server's)
            errors = [e for e in report.get("consoleErrors", []) if "(File not found)" not in e]
            assert not errors, errors
            # The turn is stored in the key owner's session on the published assistant.
            sessions = http.get("/v1/sessions").json().get("sessions", [])
            assert any(s.get("assistant_id") == assistant["id"] for s in sessions), sessions
        assert any(s.path.endswith("/chat/completions") for s in upstream.seen)
    finally:
        upstream.stop()
