"""The web console: console/dist (built by `make console`) served at `/` beside the API.

`/` and every unknown non-API path without a file extension (a client-side route such as /chat/<id>, so a
reload lands on the same view) answer index.html with `Cache-Control: no-cache`; files under /assets/ carry a
content hash in their name and are cached for a year. Paths owned by the API and the operations endpoints
(/v1, /openai, /anthropic, /healthz, /readyz, /metrics, /docs, /openapi.json) never match here, so their 404 and 405
answers stay the gateway's JSON. When the console has not been built, `/` answers a short page saying how to build it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

# First path segments the console never answers: the API, the compatibility surfaces and the ops endpoints.
RESERVED_PREFIXES = ("v1", "openai", "anthropic", "healthz", "readyz", "metrics", "docs", "openapi.json", "embed")
ASSETS_DIR = "assets"
IMMUTABLE = "public, max-age=31536000, immutable"
# The console talks to its own origin only; inline style attributes are set by the UI library. blob: images and
# frames are files the console itself fetched with the user's credential (knowledge file previews, attachments).
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "content-security-policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; frame-src blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Typecase</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>Typecase is running</h1>
<p>The web console has not been built. Build it once with <code>make console</code> (needs Node.js and npm),
then reload this page. The server looks for it in <code>{directory}</code>
(setting <code>TYPECASE_CONSOLE_DIR</code>).</p>
<p>The API is served here all the same: <a href="/docs">/docs</a> lists every route.</p>
</body></html>
"""

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("application/json", ".map")
mimetypes.add_type("image/svg+xml", ".svg")


def is_reserved(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return first in RESERVED_PREFIXES or any(first.startswith(p + ":") for p in RESERVED_PREFIXES)


class ConsoleRoute(BaseRoute):
    """GET/HEAD of any path outside the API: a file of the built console, else its index.html."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or is_reserved(scope["path"]):
            return Match.NONE, {}
        return Match.FULL, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.respond(Request(scope, receive))
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)

    def respond(self, request: Request) -> Response:
        root = self.directory.resolve()
        index = root / "index.html"
        if not index.is_file():
            return HTMLResponse(NOT_BUILT.format(directory=root), headers={"cache-control": "no-cache"})
        relative = request.url.path.lstrip("/")
        if relative:
            try:
                candidate = (root / relative).resolve()
                inside = candidate.is_relative_to(root) and candidate != root
                is_file = inside and candidate.is_file()
            except (OSError, ValueError):  # NUL bytes, names too long for the file system
                inside = is_file = False
            if is_file and candidate.name != "index.html":
                cache = IMMUTABLE if relative.startswith(ASSETS_DIR + "/") else "no-cache"
                return FileResponse(candidate, headers={"cache-control": cache})
            if relative.startswith(ASSETS_DIR + "/") or "." in relative.rsplit("/", 1)[-1] or not inside:
                # A missing file (a stale page's hashed asset, /robots.txt, ...) is a 404, not the app's HTML:
                # client routes are ids and words, never names with an extension.
                return PlainTextResponse("Not Found", status_code=404, headers={"cache-control": "no-cache"})
        return FileResponse(index, media_type="text/html", headers={"cache-control": "no-cache"})


def console_routes(directory: Path) -> list[BaseRoute]:
    return [ConsoleRoute(directory)]
