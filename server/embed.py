"""The embeddable chat page for a published assistant or flow ("publish as API", issue 25): a site puts

    <iframe src="https://typecase.example.com/embed/assistants/<id>#key=<scoped API key>"></iframe>

in its pages. The page, its script and style are static files (embed_static/); the script takes the key from the
URL fragment, which browsers never send to a server (so it is in no access log or Referer), and chats through the
public REST API of the page's own origin, so CORS does not apply and the key only needs the "chat" action on the
named assistant or flow (auth/scopes.py). The page is meant to be framed by other sites: `frame-ancestors` comes
from `embed_frame_ancestors` (default `*`, every site) rather than the console's `'none'`; everything else is as
strict as the console's policy (scripts, styles and connections to its own origin only, no referrer).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).with_name("embed_static")
NONE = "'none'"
TYPES = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}


def embed_routes(frame_ancestors: str = "*") -> list[Route]:
    headers = {
        "content-security-policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; "
            f"form-action 'none'; frame-ancestors {frame_ancestors or NONE}"
        ),
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "cache-control": "no-cache",
    }

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "chat.html", media_type="text/html; charset=utf-8", headers=headers)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in TYPES:  # only the known files: a name is never joined to a path as given
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(STATIC / name, media_type=TYPES[name], headers=headers)

    return [
        Route("/embed/assistants/{resource_id}", page, methods=["GET", "HEAD"]),
        Route("/embed/flows/{resource_id}", page, methods=["GET", "HEAD"]),
        Route("/embed/{name:path}", asset, methods=["GET", "HEAD"]),
    ]
