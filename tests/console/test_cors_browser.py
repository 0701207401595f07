"""CORS in Chromium: a page from an allowed origin calls the API (REST with a bearer key, an SSE stream, a
WebSocket); the same page from another origin is blocked on all three. Both pages are served by real HTTP servers
on loopback, on ports other than the API's, so they are different origins."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.console.test_browser import CHROMIUM, NODE, scenario

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or NODE is None, reason="needs Debian's chromium and node")


@pytest.fixture
def page_origins(tmp_path) -> Iterator[tuple[str, str]]:
    (tmp_path / "index.html").write_text("<!doctype html><title>another web app</title><p>hello</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_cross_origin_pages_in_chromium(server_factory, page_origins):
    allowed, other = page_origins
    server = server_factory(env={"TYPECASE_CORS_ALLOWED_ORIGINS": allowed})
    server.start()
    server.wait_ready()
    models = httpx.get(f"{server.http_url}/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    model = next(m["id"] for m in models["models"] if m.get("type") == "MODEL_TYPE_LLM")

    seen = scenario("cors", server.http_url, ORIGIN_PAGE=f"{allowed}/index.html", LABEL="allowed", MODEL=model)
    assert seen["ok"], seen
    assert seen["result"] == {"rest": 200, "traceIdVisible": True, "sse": "streamed", "ws": "frame"}

    seen = scenario("cors", server.http_url, ORIGIN_PAGE=f"{other}/index.html", LABEL="other", MODEL=model)
    assert seen["ok"], seen
    assert seen["result"] == {"rest": "blocked: TypeError", "sse": "blocked: TypeError", "ws": "blocked"}
