"""The console's HTTP side: index.html for client routes, cached hashed assets, and the API's paths untouched."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN_KEY

INDEX = '<!doctype html><title>console</title><script type="module" src="/assets/main-ABC123.js"></script>'


@pytest.fixture
def console_dir(tmp_path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "main-ABC123.js").write_text("console.log('console')")
    (dist / "assets" / "main-ABC123.css").write_text("body{}")
    (tmp_path / "secret.txt").write_text("outside the console")
    return dist


async def test_serves_the_built_console_beside_the_api(app_factory, console_dir):
    app = await app_factory(console_dir=console_dir)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=10) as http:
        for path in ("/", "/chat", "/chat/01J0000000000000000000000", "/knowledge/x/y?tab=files"):
            r = await http.get(path)
            assert r.status_code == 200 and r.text == INDEX, path
            assert r.headers["content-type"].startswith("text/html")
            assert r.headers["cache-control"] == "no-cache"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert (await http.head("/flows")).status_code == 200

        js = await http.get("/assets/main-ABC123.js")
        assert js.status_code == 200 and js.text == "console.log('console')"
        assert js.headers["content-type"].startswith("text/javascript")
        assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert (await http.get("/assets/main-ABC123.css")).headers["content-type"].startswith("text/css")
        # A hashed asset that does not exist is a 404, not the app's HTML (a stale page must not get HTML as JS).
        for path in ("/assets/main-OLD999.js", "/robots.txt", "/chat/logo.png"):
            missing = await http.get(path)
            assert missing.status_code == 404 and "<html" not in missing.text.lower(), path

        # Nothing outside the directory, however the path is spelled.
        for path in ("/%2e%2e/secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt"):
            r = await http.get(path)
            assert "outside the console" not in r.text, path

        # Only GET and HEAD: other methods on non-API paths stay the gateway's JSON 404.
        post = await http.post("/chat", json={})
        assert post.status_code == 404 and post.json()["code"] == 5


async def test_api_and_operations_paths_are_never_the_console(app_factory, console_dir):
    app = await app_factory(console_dir=console_dir)
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=10) as http:
        for path in ("/v1/no-such-thing", "/v1", "/v1/", "/openai/v1/nothing", "/openai", "/anthropic/v1/nothing",
                     "/v1:foo", "/metrics/x"):
            r = await http.get(path, headers=auth)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("application/json"), path
            assert r.json()["code"] == 5, path
        # A path bound for another method keeps its 405.
        assert (await http.delete("/v1/auth/me", headers=auth)).status_code == 405
        # The real endpoints answer as before.
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/openapi.json")).json()["openapi"].startswith("3.")
        assert "text/html" in (await http.get("/docs")).headers["content-type"]
        assert INDEX not in (await http.get("/docs")).text
        assert (await http.get("/metrics")).text.startswith("#")
        assert (await http.get("/v1/auth/me", headers=auth)).json()["user"]["username"]
        assert (await http.get("/openai/v1/models", headers=auth)).json()["object"] == "list"


async def test_unbuilt_console_says_how_to_build_it(app_factory, tmp_path):
    app = await app_factory(console_dir=tmp_path / "nowhere")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=10) as http:
        for path in ("/", "/chat/1"):
            r = await http.get(path)
            assert r.status_code == 200 and "make console" in r.text and "TYPECASE_CONSOLE_DIR" in r.text
            assert r.headers["cache-control"] == "no-cache"
        assert (await http.get("/v1/nothing")).json()["code"] == 5


def test_default_console_dir_is_the_repo_build():
    from pathlib import Path

    from typecase.server.config import Settings

    root = Path(__file__).resolve().parents[2]
    assert Settings(_env_file=None).console_dir == root / "console" / "dist"
